/*
 * tree: the mounted state. Projects, their actions, the rendered bytes
 * of each, when each was fetched, and the .phfs/ files. Decides when to
 * ask the server (TTL) and what a path means.
 *
 * Knows no FUSE: paths in, struct stat, bytes and -errno out. Never
 * holds its lock across a request.
 */
#ifndef PHFS_TREE_H
#define PHFS_TREE_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "api.h"

struct tree;
struct tree_handle;

struct tree_opts {
	double ttl;            /* seconds a listing or action is trusted */
	int ro;                /* modes 0444/0555 */
	uid_t uid;
	gid_t gid;
	char **projects;       /* -o project= ids or "@current", or NULL */
	size_t nprojects;
};

struct tree *tree_new(struct api *api, const struct tree_opts *o);
/* Waits for background work (prefetching) to end; starts none after. */
void tree_stop(struct tree *t);
void tree_free(struct tree *t);

/*
 * The check before mounting: lists the projects (or gets each of
 * -o project=) and keeps the answer. Returns 0 or -errno with @e set.
 */
int tree_premount(struct tree *t, struct api_err *e);

/* Forgets every listing and action so the next access fetches (SIGHUP). */
void tree_drop_caches(struct tree *t);

/*
 * How the kernel caches: how long it trusts attributes (-o attr_timeout)
 * and whether it can be told at once what changed (@notify: the caller
 * invalidates the paths tree_open and tree_call_saved name). Without
 * notifications a file is read past the page cache for attr_timeout + 1 s
 * after a change, so that a size the kernel still has never cuts it.
 */
void tree_set_kernel_cache(struct tree *t, double attr_timeout, int notify);

/* Starts one filesystem call: its requests share one deadline. */
void tree_call_begin(struct tree *t);

/*
 * Whether the current call saved a file: the kernel's attributes of the
 * path it saved (what was written, not the server's answer) are stale.
 */
int tree_call_saved(void);

/*
 * At unmount: writes every file that never reached the server (new
 * files whose save failed, NAME.rejected) under @dir, and logs where.
 */
void tree_keep_unsaved(struct tree *t, const char *dir);

int tree_getattr(struct tree *t, const char *path, struct stat *st);

/*
 * A directory's entries as one readdir from offset 0 saw them; the
 * kernel takes them in as many calls as its buffer needs. NULL with
 * -errno in *rc on failure.
 */
struct tree_dir;
struct tree_dir *tree_readdir(struct tree *t, const char *path, int *rc);
size_t tree_dir_count(const struct tree_dir *d);
const char *tree_dir_name(const struct tree_dir *d, size_t i);
const struct stat *tree_dir_stat(const struct tree_dir *d, size_t i);
/* The attributes are exact: the kernel may keep them (readdirplus). */
int tree_dir_exact(const struct tree_dir *d);
/* Entries [from, to) went to the kernel with their attributes. */
void tree_dir_given(struct tree *t, const struct tree_dir *d, size_t from,
		    size_t to);
void tree_dir_free(struct tree_dir *d);

struct tree_open_result {
	struct tree_handle *handle;
	int keep_cache; /* the kernel's cached pages are still right */
	int direct_io;  /* content whose size is not known ahead */
	int invalidate; /* the kernel's attributes of the path are stale */
};
int tree_open(struct tree *t, const char *path, int flags,
	      struct tree_open_result *out);
/* The caller did what tree_open asked of the kernel (invalidate); only
 * needed when it asked. */
void tree_open_done(struct tree_handle *h);
ssize_t tree_read(struct tree_handle *h, char *buf, size_t size, off_t off);
void tree_release(struct tree_handle *h);
int tree_fgetattr(struct tree_handle *h, struct stat *st);
/* The path @h was opened by, without its leading '/'. */
const char *tree_handle_name(const struct tree_handle *h);

/*
 * Changes (save.c). Each returns 0 or -errno. A save happens at
 * tree_flush of a dirty handle (every close and fsync) and at a rename
 * of a scratch file onto an action name; see DESIGN.md "Saving".
 */
int tree_create(struct tree *t, const char *path, mode_t mode, int flags,
		struct tree_open_result *out);
ssize_t tree_write(struct tree_handle *h, const char *buf, size_t size,
		   off_t off);
int tree_ftruncate(struct tree_handle *h, off_t size);
int tree_truncate(struct tree *t, const char *path, off_t size);
int tree_flush(struct tree_handle *h);
int tree_unlink(struct tree *t, const char *path);
int tree_rename(struct tree *t, const char *from, const char *to,
		unsigned int flags);
int tree_symlink(struct tree *t, const char *target, const char *path);
int tree_readlink(struct tree *t, const char *path, char *buf, size_t size);
int tree_link(struct tree *t, const char *from, const char *to);
int tree_chmod(struct tree *t, const char *path, mode_t mode);
int tree_utimens(struct tree *t, const char *path,
		 const struct timespec tv[2]);

#endif
