/*
 * tree_int: the mounted state's structures, shared by tree.c (reading,
 * listings, names), local.c (files held in memory) and save.c (every
 * change). Not for ops.c or anything above: they see tree.h only.
 *
 * Everything here is guarded by tree->lock, except blob reference counts
 * (atomic) and the bytes of a blob (never changed once made).
 */
#ifndef PHFS_TREE_INT_H
#define PHFS_TREE_INT_H

#include "tree.h"
#include "names.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define KERNEL_NONE ((unsigned long)-1)

/* Bytes shared by the tree and every handle that opened them. */
struct blob {
	unsigned long refs;
	size_t len;
	char data[];
};

struct action {
	uint64_t id;
	char fname[NAMES_FILE_MAX];
	struct blob *content;
	/* The version last handed out (read, or answered to a save): what
	 * a save is compared with. NULL: the content. */
	struct blob *base;
	double fetched;           /* monotonic time the content came */
	struct timespec mtime;    /* created_at, or when a change was seen */
	unsigned long gen;        /* bumped when the content changes */
	/* What the kernel holds of it, per name (a hash of the path: every
	 * name is an inode of its own): the gen and name whose attributes
	 * it was last given, the gen and name it last cached pages of, and
	 * how many handles read through those pages. KERNEL_NONE: unknown. */
	unsigned long attr_gen, page_gen;
	uint64_t attr_path, page_path;
	unsigned long page_opens;
	size_t page_len;          /* the length of the page_gen version */
	unsigned long page_drops; /* opens dropping the kernel's pages */
	int paged_ever; /* read through the page cache once: it may hold pages */
	unsigned long writers; /* handles open to write: they move its size */
	double changed;           /* monotonic time of the last change */
	double saved;             /* monotonic time of our last save of it */
	int hidden; /* renamed away to a scratch name: not listed here */
};

/* A file held in memory only: a scratch file, or an action file that is
 * not (yet) an action on the server. */
struct local {
	char *name;
	char *data;
	size_t len, cap;
	mode_t mode; /* S_IFREG or S_IFLNK with permission bits */
	struct timespec mtime;
	uint64_t bound;     /* the action a record name stands for, or 0 */
	int restore;        /* bound to a soft-deleted action */
	struct blob *base;  /* the bound action as last seen, or NULL */
	uint64_t detached;  /* renamed away from this action, or 0 */
	unsigned long refs; /* open handles, plus one while linked */
	int linked;         /* still has its name in the directory */
	int saved_once;     /* a save of it succeeded at least once */
	struct local *next;
};

/* A name a file was created or renamed under, kept reaching its action. */
struct alias {
	char *name;
	uint64_t id;
};

struct project {
	uint64_t id;
	char dname[NAMES_FILE_MAX];
	struct action **acts; /* sorted by id */
	size_t nacts;
	double listed; /* monotonic time of the listing; 0 = never */
	struct blob *csv;   /* the server's format=csv listing, or NULL */
	double csv_fetched; /* monotonic time it came */
	int refreshing;
	struct local *locals;
	struct alias *aliases;
	size_t naliases;
};

struct tree {
	struct api *api;
	struct tree_opts opts;
	struct timespec mounted;

	pthread_mutex_t lock;
	pthread_cond_t refreshed;
	struct project **projs; /* sorted by id */
	size_t nprojs;
	double projs_listed;
	int projs_refreshing;
	size_t local_bytes; /* held by every local file */
	size_t prefetching; /* prefetch workers still running */
	int stopping;       /* unmounting: start no more work */
	double attr_timeout; /* the kernel's, see tree_set_kernel_cache */
	int kernel_notify;   /* the kernel can be told what changed */
	struct tree_handle *handles; /* open files, freed at unmount if the
				      * kernel never released them */
	unsigned long cache_hits, cache_misses, served_stale;
	unsigned long reads_served; /* of action files opened to read; the
				     * kernel's page cache served the rest */
	unsigned long saves, saves_failed, conflicts;
};

enum handle_kind {
	H_READ,   /* a snapshot: .phfs files, action files opened to read */
	H_ACTION, /* an action file opened to write: its own buffer */
	H_LOCAL,  /* a local file: reads and writes go to it */
};

struct tree_handle {
	struct tree *t;
	struct tree_handle *prev, *next; /* every open handle, in the tree */
	enum handle_kind kind;
	struct blob *blob; /* H_READ */
	uint64_t pid, aid; /* H_ACTION; pid for H_LOCAL too */
	char *buf;         /* H_ACTION */
	size_t len, cap;
	struct local *local; /* H_LOCAL */
	int dirty;  /* written since the last successful save */
	int paged;    /* reads through the kernel's page cache */
	int dropping; /* counted in the action's page_drops */
	int writer;   /* counted in the action's writers */
	int append; /* opened with O_APPEND: writes go to the end */
	char fname[NAMES_FILE_MAX * 4]; /* for messages */
};

enum node_kind {
	NODE_ROOT,
	NODE_META,
	NODE_META_LOG,
	NODE_META_STATS,
	NODE_META_CSVDIR,
	NODE_META_CSV,
	NODE_PROJECT,
	NODE_ACTION,
	NODE_LOCAL,
	NODE_NONE, /* a name that could be created in a project */
};

struct node {
	enum node_kind kind;
	uint64_t pid, aid;
	struct local *local;
	const char *name; /* the last component, inside the path */
};

/* Largest file held in memory, and all of them together. */
#define LOCAL_FILE_MAX (16u << 20)
#define LOCAL_TOTAL_MAX (256u << 20)

/* Entries copied out of the tree, handed to the kernel without the
 * lock, in as many readdir calls as it takes. */
struct tree_dir {
	char **names;
	struct stat *stats;
	uint64_t *aids;      /* the action of each entry, or 0 */
	unsigned long *gens; /* its gen when copied */
	size_t count, cap;
	uint64_t pid; /* the project listed, or 0 */
	int exact;    /* the attributes are what getattr answers */
};

/* tree.c */
void tree_fill_stat(struct tree *t, struct stat *st, int dir, off_t size,
		    const struct timespec *mtime);
double tree_now(void);
struct blob *blob_new(const char *data, size_t len);
struct blob *blob_ref(struct blob *b);
void blob_unref(struct blob *b);
void tree_action_free(struct action *a);
void tree_project_free(struct tree *t, struct project *p);
struct project *tree_find_project(struct tree *t, uint64_t id);
struct action **tree_find_action(struct project *p, uint64_t id);
/* Whether something fetched at @stamp is still within ttl at @now. */
int tree_fresh_enough(const struct tree *t, double stamp, double now);
int tree_resolve(struct tree *t, const char *path, struct node *n);
/* Chains a handle about to be handed to the kernel. Lock held. */
void tree_handle_register(struct tree *t, struct tree_handle *h);
/* The action @h reads, if it is still there. Lock held. */
struct action *tree_handle_action(struct tree *t,
				  const struct tree_handle *h);
void tree_alias(struct project *p, const char *name, uint64_t id);

/* refresh.c: lock held; every request drops it meanwhile. */
struct action *tree_action_from_json(const cJSON *item);
/* Puts @fresh in place of the action with its id (or adds it). */
void tree_put_action(struct project *p, struct action *fresh);
void tree_drop_action(struct project *p, uint64_t id);
int tree_refresh_project(struct tree *t, uint64_t pid);
int refresh_projects(struct tree *t);
/* Gets action @aid again when its copy is older than ttl. */
int refresh_action(struct tree *t, uint64_t pid, uint64_t aid);
/* Starts listing every project not listed within ttl, in parallel. */
void refresh_prefetch(struct tree *t);

/* kernel.c: lock held. */
int tree_dir_add(struct tree_dir *d, const char *name, const struct stat *st);
uint64_t kernel_path_hash(const char *path);
/* How an action file opened to read uses the kernel's caches. */
void kernel_open(struct tree *t, struct action *a, struct tree_handle *h,
		 struct tree_open_result *out);
/* The size the kernel is to see of @a in *size, and the gen it is of. */
unsigned long kernel_size(const struct action *a, off_t *size);
/* The size fstat of @h gives the kernel. */
off_t kernel_handle_stat(struct tree *t, const struct tree_handle *h);
/* @h is released: the counts it was in. */
void kernel_release(struct tree *t, struct tree_handle *h);
/* @h now writes action @a (a new file saved while open). */
void kernel_writer(struct action *a, struct tree_handle *h);
/* A new filesystem call begins on this thread. */
void kernel_call_begin(void);
/* A save in this call: tree_call_saved() says so. */
void tree_note_saved(struct tree *t);
/* The kernel holds sizes of action @aid that did not come from here
 * (written, cut, renamed onto it): its caches are of no known version. */
void tree_forget_pages(struct tree *t, uint64_t pid, uint64_t aid);
void tree_kernel_unknown(struct action *a);

/* meta.c: the .phfs directory. meta_resolve and meta_readdir run with
 * the lock held; meta_getattr and meta_open without it. */
int meta_resolve(struct tree *t, const char *rest, struct node *n);
int meta_getattr(struct tree *t, const struct node *n, struct stat *st);
int meta_readdir(struct tree *t, const struct node *n, struct tree_dir *d);
int meta_open(struct tree *t, const struct node *n, struct tree_handle *h);

/* local.c */
struct local *local_find(struct project *p, const char *name);
struct local *local_new(struct tree *t, struct project *p, const char *name,
			mode_t mode);
int local_set(struct tree *t, struct local *l, const char *data, size_t len);
int local_write(struct tree *t, struct local *l, const char *buf,
		size_t size, off_t off);
int local_truncate(struct tree *t, struct local *l, off_t size);
/* Takes the name away; frees it when no handle has it open. */
void local_unlink(struct tree *t, struct project *p, struct local *l);
void local_unref(struct tree *t, struct local *l);
void local_free_all(struct tree *t, struct project *p);

/* save.c */
/*
 * Saves @text as record @fname of project @pid: PATCH of @aid (restoring
 * it when @restore), or POST when @aid is 0. Called with the lock held;
 * drops it during requests. Sets *saved to the action's id.
 */
int save_text(struct tree *t, uint64_t pid, const char *fname, uint64_t aid,
	      int restore, const struct blob *base, const char *text,
	      size_t len, uint64_t *saved);
/* Installs a server's answer to a save; @fname keeps reaching it. Lock
 * held. Returns the action's id, or 0. */
uint64_t save_install_answer(struct tree *t, uint64_t pid, cJSON *answer,
			     const char *fname);
/* Which action a record name stands for (*bound, 0 if none), and whether
 * it is soft-deleted (*restore, with its last version in *base). May
 * drop the lock for a GET. */
int save_bind_record(struct tree *t, uint64_t pid, const char *name,
		     uint64_t *bound, int *restore, struct blob **base);
void save_set_hidden(struct project *p, uint64_t id, int hidden);
/* A path directly under the mount's root. */
int save_is_root_file(const char *path);

#endif
