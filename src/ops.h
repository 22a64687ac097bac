/*
 * ops: the FUSE operations. Each translates one FUSE call into a tree
 * call and a -errno; no HTTP and no JSON here.
 */
#ifndef PHFS_OPS_H
#define PHFS_OPS_H

#include <fuse.h>

#include "tree.h"

/* What every operation reaches through fuse_get_context(). */
struct phfs {
	struct tree *tree;
	int kernel_notify; /* multi-threaded: invalidations cannot deadlock */
};

extern const struct fuse_operations ops_table;

/*
 * Asks for every cache to be dropped before the next operation. Safe to
 * call from a signal handler.
 */
void ops_request_drop_caches(void);

#endif
