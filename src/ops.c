/*
 * ops: struct fuse_operations (see ops.h).
 *
 * Per-open state lives in fi->fh, never looked up by path: a file can
 * be renamed or replaced while it is open.
 */
#include "ops.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
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

static struct tree_handle *fh(const struct fuse_file_info *fi)
{
	return (struct tree_handle *)(uintptr_t)fi->fh;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	/* State is keyed by handle: an open file may lose its name. */
	cfg->nullpath_ok = 1;
	cfg->hard_remove = 1;
	cfg->use_ino = 0;
	tree_set_attr_timeout(
		((struct phfs *)fuse_get_context()->private_data)->tree,
		cfg->attr_timeout);
	return fuse_get_context()->private_data;
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

struct fill_ctx {
	void *buf;
	fuse_fill_dir_t filler;
};

static int fill_one(void *arg, const char *name, const struct stat *st)
{
	struct fill_ctx *c = arg;

	return c->filler(c->buf, name, st, 0, 0);
}

/*
 * With nullpath_ok, readdir gets no path: the directory's handle carries
 * it. Open handles are chained so that those the kernel never released
 * (an unmount while a release was queued) are freed at the end.
 */
struct dir_handle {
	struct dir_handle *prev, *next;
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
	struct fill_ctx c = {buf, filler};

	(void)path;
	(void)off;
	(void)flags;
	return tree_readdir(ctx_tree(),
			    ((struct dir_handle *)(uintptr_t)fi->fh)->path,
			    fill_one, &c);
}

static void set_open_result(struct fuse_file_info *fi,
			    const struct tree_open_result *r)
{
	fi->fh = (uint64_t)(uintptr_t)r->handle;
	fi->keep_cache = r->keep_cache;
	fi->direct_io = r->direct_io;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct tree_open_result r;
	int rc = tree_open(ctx_tree(), path, fi->flags, &r);

	if (!rc)
		set_open_result(fi, &r);
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

static int op_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	ctx_tree();
	return tree_flush(fh(fi));
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	(void)datasync;
	ctx_tree();
	return tree_flush(fh(fi));
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

	if (fi && fi->fh)
		return tree_ftruncate(fh(fi), size);
	return path ? tree_truncate(t, path, size) : -EBADF;
}

static int op_unlink(const char *path)
{
	return tree_unlink(ctx_tree(), path);
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
	return tree_rename(ctx_tree(), from, to, flags);
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
