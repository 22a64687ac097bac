/*
 * ops: struct fuse_operations (see ops.h).
 *
 * Per-open state lives in fi->fh, never looked up by path: a file can
 * be renamed or replaced while it is open.
 */
#include "ops.h"

#include <errno.h>
#include <signal.h>
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
	return t;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	/* Paths are resolved by name on every call; inode numbers come
	 * from libfuse. */
	cfg->use_ino = 0;
	return fuse_get_context()->private_data;
}

static int op_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	(void)fi;
	return tree_getattr(ctx_tree(), path, st);
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

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct fill_ctx c = {buf, filler};

	(void)off;
	(void)fi;
	(void)flags;
	return tree_readdir(ctx_tree(), path, fill_one, &c);
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct tree_open_result r;
	int rc = tree_open(ctx_tree(), path, fi->flags, &r);

	if (rc)
		return rc;
	fi->fh = (uint64_t)(uintptr_t)r.handle;
	fi->keep_cache = r.keep_cache;
	fi->direct_io = r.direct_io;
	return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	(void)path;
	return (int)tree_read((struct tree_handle *)(uintptr_t)fi->fh, buf,
			      size, off);
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	tree_release((struct tree_handle *)(uintptr_t)fi->fh);
	return 0;
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

/* Changes are not supported by this mount. */
static int op_readonly(void)
{
	return -EROFS;
}

static int op_mkdir(const char *p, mode_t m)
{
	(void)p;
	(void)m;
	return op_readonly();
}

static int op_unlink(const char *p)
{
	(void)p;
	return op_readonly();
}

static int op_rename(const char *a, const char *b, unsigned int f)
{
	(void)a;
	(void)b;
	(void)f;
	return op_readonly();
}

static int op_create(const char *p, mode_t m, struct fuse_file_info *fi)
{
	(void)p;
	(void)m;
	(void)fi;
	return op_readonly();
}

static int op_truncate(const char *p, off_t s, struct fuse_file_info *fi)
{
	(void)p;
	(void)s;
	(void)fi;
	return op_readonly();
}

const struct fuse_operations ops_table = {
	.init = op_init,
	.getattr = op_getattr,
	.readdir = op_readdir,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.statfs = op_statfs,
	.mkdir = op_mkdir,
	.rmdir = op_unlink,
	.unlink = op_unlink,
	.rename = op_rename,
	.create = op_create,
	.truncate = op_truncate,
};
