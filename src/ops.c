/*
 * ops: struct fuse_operations (see ops.h).
 *
 * Per-open state lives in fi->fh, never looked up by path: a file can
 * be renamed or replaced while it is open.
 */
#include "ops.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t drop_pending;

void ops_request_drop_caches(void)
{
	drop_pending = 1;
}

static struct tree *ctx_tree(void)
{
	struct tree *t =
		((struct phfs *)fuse_get_context()->private_data)->tree;

	if (drop_pending) {
		drop_pending = 0;
		tree_drop_caches(t);
	}
	/* Every operation starts here: its requests share one deadline. */
	tree_call_begin(t);
	return t;
}

/*
 * The kernel forgets the attributes and pages it holds of @path: a save
 * or an open found content other than what it cached. Called after the
 * tree call, with no tree lock held.
 */
static void kernel_forget(const char *path)
{
	struct phfs *ph = fuse_get_context()->private_data;

	if (path && ph->kernel_notify)
		fuse_invalidate_path(fuse_get_context()->fuse, path);
}

static struct tree_handle *fh(const struct fuse_file_info *fi)
{
	return (struct tree_handle *)(uintptr_t)fi->fh;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct phfs *ph = fuse_get_context()->private_data;

	(void)conn;
	/* State is keyed by handle: an open file may lose its name. */
	cfg->nullpath_ok = 1;
	cfg->hard_remove = 1;
	cfg->use_ino = 0;
	tree_set_kernel_cache(ph->tree, cfg->attr_timeout, ph->kernel_notify);
	return ph;
}

static int op_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	struct tree *t = ctx_tree();

	if (fi && fi->fh) /* only regular files pass a handle here */
		return tree_fgetattr(fh(fi), st);
	if (!path)
		return -ENOENT;
	return tree_getattr(t, path, st);
}

/*
 * With nullpath_ok, readdir gets no path: the directory's handle carries
 * it, and the entries read from offset 0 for the calls that follow. Open
 * handles are chained so that those the kernel never released (an
 * unmount while a release was queued) are freed at the end.
 */
struct dir_handle {
	struct dir_handle *prev, *next;
	struct tree_dir *entries;
	char path[];
};

static pthread_mutex_t dirs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dir_handle *dirs;

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
	struct dir_handle *d = malloc(sizeof(*d) + strlen(path) + 1);

	if (!d)
		return -ENOMEM;
	strcpy(d->path, path);
	d->entries = NULL;
	pthread_mutex_lock(&dirs_lock);
	d->prev = NULL;
	d->next = dirs;
	if (dirs)
		dirs->prev = d;
	dirs = d;
	pthread_mutex_unlock(&dirs_lock);
	fi->fh = (uint64_t)(uintptr_t)d;
	return 0;
}

static void dir_free(struct dir_handle *d)
{
	if (d->prev)
		d->prev->next = d->next;
	else
		dirs = d->next;
	if (d->next)
		d->next->prev = d->prev;
	tree_dir_free(d->entries);
	free(d);
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	pthread_mutex_lock(&dirs_lock);
	dir_free((struct dir_handle *)(uintptr_t)fi->fh);
	pthread_mutex_unlock(&dirs_lock);
	return 0;
}

static void op_destroy(void *data)
{
	(void)data;
	pthread_mutex_lock(&dirs_lock);
	while (dirs)
		dir_free(dirs);
	pthread_mutex_unlock(&dirs_lock);
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	struct tree *t = ctx_tree();
	struct stat dot = {.st_mode = S_IFDIR | 0755};
	enum fuse_fill_dir_flags plus = 0;
	size_t i, n;
	int rc = 0;

	(void)path;
	if (off < 0)
		return -EINVAL;
	if (off == 0 || !d->entries) { /* from the start: read it again */
		tree_dir_free(d->entries);
		d->entries = tree_readdir(t, d->path, &rc);
		if (!d->entries)
			return rc;
	}
	/* Exact attributes go with the names: a walk over the directory
	 * then needs no lookup per file. Entry i is at offset i + 1. */
	if ((flags & FUSE_READDIR_PLUS) && tree_dir_exact(d->entries))
		plus = FUSE_FILL_DIR_PLUS;
	n = tree_dir_count(d->entries) + 2;
	for (i = (size_t)off; i < n; i++) {
		if (i < 2 ? filler(buf, i ? ".." : ".", &dot, (off_t)i + 1, 0)
			  : filler(buf, tree_dir_name(d->entries, i - 2),
				   tree_dir_stat(d->entries, i - 2),
				   (off_t)i + 1, plus))
			break; /* the kernel's buffer is full */
	}
	if (plus && i > 2)
		tree_dir_given(t, d->entries, off > 2 ? (size_t)off - 2 : 0,
			       i - 2);
	return 0;
}

static void set_open_result(struct fuse_file_info *fi,
			    const struct tree_open_result *r)
{
	fi->fh = (uint64_t)(uintptr_t)r->handle;
	fi->keep_cache = r->keep_cache;
	fi->direct_io = r->direct_io;
	/* A handle opened to read never saves: no flush at close. */
	fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct tree_open_result r;
	int rc = tree_open(ctx_tree(), path, fi->flags, &r);

	if (!rc) {
		set_open_result(fi, &r);
		if (r.invalidate) { /* a drop in progress ends here */
			kernel_forget(path);
			tree_open_done(r.handle);
		}
	}
	return rc;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct tree_open_result r;
	int rc = tree_create(ctx_tree(), path, mode, fi->flags, &r);

	if (!rc)
		set_open_result(fi, &r);
	return rc;
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	(void)path;
	return (int)tree_read(fh(fi), buf, size, off);
}

static int op_write(const char *path, const char *buf, size_t size,
		    off_t off, struct fuse_file_info *fi)
{
	(void)path;
	ctx_tree();
	return (int)tree_write(fh(fi), buf, size, off);
}

/* A save leaves the server's answer, not what was written: the kernel
 * forgets the size it has (a stat while the file was open may have
 * cached the one before). With nullpath_ok these calls get no path: the
 * handle has the one it was opened by. */
static int flush_and_forget(struct fuse_file_info *fi)
{
	char path[4096];
	int rc;

	ctx_tree();
	rc = tree_flush(fh(fi));
	if (tree_call_saved() &&
	    snprintf(path, sizeof(path), "/%s", tree_handle_name(fh(fi))) <
		    (int)sizeof(path))
		kernel_forget(path);
	return rc;
}

static int op_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	return flush_and_forget(fi);
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	(void)datasync;
	return flush_and_forget(fi);
}

static int op_fsyncdir(const char *path, int datasync,
		       struct fuse_file_info *fi)
{
	(void)path;
	(void)datasync;
	(void)fi;
	return 0;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	tree_release(fh(fi));
	return 0;
}

static int op_truncate(const char *path, off_t size,
		       struct fuse_file_info *fi)
{
	struct tree *t = ctx_tree();
	int rc;

	if (fi && fi->fh)
		return tree_ftruncate(fh(fi), size);
	if (!path)
		return -EBADF;
	rc = tree_truncate(t, path, size);
	kernel_forget(path); /* cut here, saved as the server answered */
	return rc;
}

static int op_unlink(const char *path)
{
	return tree_unlink(ctx_tree(), path);
}

/* The file renamed keeps its inode and the size written to it, not the
 * one the server answered a save with: the kernel forgets it. */
static int op_rename(const char *from, const char *to, unsigned int flags)
{
	int rc = tree_rename(ctx_tree(), from, to, flags);

	if (!rc)
		kernel_forget(from);
	return rc;
}

/* Projects come from the server: none is made or removed here. */
static int op_mkdir(const char *path, mode_t mode)
{
	(void)path;
	(void)mode;
	return -EPERM;
}

static int op_rmdir(const char *path)
{
	struct stat st;
	int rc = tree_getattr(ctx_tree(), path, &st);

	return rc ? rc : S_ISDIR(st.st_mode) ? -EPERM : -ENOTDIR;
}

static int op_symlink(const char *target, const char *path)
{
	return tree_symlink(ctx_tree(), target, path);
}

static int op_readlink(const char *path, char *buf, size_t size)
{
	return tree_readlink(ctx_tree(), path, buf, size);
}

static int op_link(const char *from, const char *to)
{
	return tree_link(ctx_tree(), from, to);
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	(void)fi;
	return path ? tree_chmod(ctx_tree(), path, mode) : 0;
}

/* Ownership is the mounting user's; a change to the same is accepted. */
static int op_chown(const char *path, uid_t uid, gid_t gid,
		    struct fuse_file_info *fi)
{
	struct stat st;
	int rc;

	(void)uid;
	(void)gid;
	if (fi && fi->fh)
		return 0;
	rc = path ? tree_getattr(ctx_tree(), path, &st) : 0;
	return rc;
}

static int op_utimens(const char *path, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	(void)fi;
	return path ? tree_utimens(ctx_tree(), path, tv) : 0;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = 4096;
	sv->f_frsize = 4096;
	sv->f_namemax = 255;
	return 0;
}

const struct fuse_operations ops_table = {
	.init = op_init,
	.destroy = op_destroy,
	.getattr = op_getattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.fsync = op_fsync,
	.fsyncdir = op_fsyncdir,
	.release = op_release,
	.truncate = op_truncate,
	.unlink = op_unlink,
	.rename = op_rename,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.readlink = op_readlink,
	.link = op_link,
	.chmod = op_chmod,
	.chown = op_chown,
	.utimens = op_utimens,
	.statfs = op_statfs,
};
