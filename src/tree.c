/*
 * tree: the mounted state (see tree.h): names to nodes, attributes,
 * directory copies, open and read. Listings and their refreshes are in
 * refresh.c, what the kernel may keep in kernel.c, changes in save.c.
 *
 * One mutex guards everything here; it is never held across a request.
 * A listing is refreshed by one thread at a time while the others wait
 * for its result. Open files hold a reference to the bytes they opened,
 * never a pointer into the tree, so a refresh can replace anything.
 */
#include "tree_int.h"
#include "action.h"
#include "listing.h"
#include "log.h"
#include "names.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double tree_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct blob *blob_new(const char *data, size_t len)
{
	struct blob *b = malloc(sizeof(*b) + len + 1);

	if (!b)
		return NULL;
	b->refs = 1;
	b->len = len;
	memcpy(b->data, data, len);
	b->data[len] = '\0';
	return b;
}

struct blob *blob_ref(struct blob *b)
{
	__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
	return b;
}

void blob_unref(struct blob *b)
{
	if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(b);
}

void tree_action_free(struct action *a)
{
	if (!a)
		return;
	blob_unref(a->content);
	blob_unref(a->base);
	free(a);
}

static void aliases_free(struct project *p)
{
	for (size_t i = 0; i < p->naliases; i++)
		free(p->aliases[i].name);
	free(p->aliases);
	p->aliases = NULL;
	p->naliases = 0;
}

void tree_project_free(struct tree *t, struct project *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nacts; i++)
		tree_action_free(p->acts[i]);
	free(p->acts);
	local_free_all(t, p);
	aliases_free(p);
	blob_unref(p->csv);
	free(p);
}

void tree_alias(struct project *p, const char *name, uint64_t id)
{
	struct alias *grown;
	char *copy;

	for (size_t i = 0; i < p->naliases; i++) {
		if (!strcmp(p->aliases[i].name, name)) {
			p->aliases[i].id = id;
			return;
		}
	}
	copy = strdup(name);
	grown = realloc(p->aliases, (p->naliases + 1) * sizeof(*grown));
	if (!copy || !grown) {
		free(copy);
		if (grown)
			p->aliases = grown;
		return; /* only a convenience: the id prefix still works */
	}
	p->aliases = grown;
	p->aliases[p->naliases].name = copy;
	p->aliases[p->naliases++].id = id;
}

static uint64_t alias_lookup(const struct project *p, const char *name)
{
	for (size_t i = 0; i < p->naliases; i++)
		if (!strcmp(p->aliases[i].name, name))
			return p->aliases[i].id;
	return 0;
}

struct action **tree_find_action(struct project *p, uint64_t id)
{
	size_t lo = 0, hi = p->nacts;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (p->acts[mid]->id == id)
			return &p->acts[mid];
		if (p->acts[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct project *tree_find_project(struct tree *t, uint64_t id)
{
	size_t lo = 0, hi = t->nprojs;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (t->projs[mid]->id == id)
			return t->projs[mid];
		if (t->projs[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct tree *tree_new(struct api *api, const struct tree_opts *o)
{
	struct tree *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->api = api;
	t->opts = *o;
	clock_gettime(CLOCK_REALTIME, &t->mounted);
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->refreshed, NULL);
	return t;
}

void tree_stop(struct tree *t)
{
	pthread_mutex_lock(&t->lock);
	t->stopping = 1;
	while (t->prefetching)
		pthread_cond_wait(&t->refreshed, &t->lock);
	pthread_mutex_unlock(&t->lock);
}

void tree_free(struct tree *t)
{
	if (!t)
		return;
	tree_stop(t);
	/* Files the kernel never released (an unmount with a release still
	 * queued): nothing else can reach them now. */
	while (t->handles)
		tree_release(t->handles);
	for (size_t i = 0; i < t->nprojs; i++)
		tree_project_free(t, t->projs[i]);
	free(t->projs);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->refreshed);
	free(t);
}

void tree_call_begin(struct tree *t)
{
	kernel_call_begin();
	api_call_begin(t->api);
}

void tree_drop_caches(struct tree *t)
{
	pthread_mutex_lock(&t->lock);
	t->projs_listed = 0;
	for (size_t i = 0; i < t->nprojs; i++) {
		t->projs[i]->listed = 0;
		for (size_t k = 0; k < t->projs[i]->nacts; k++)
			t->projs[i]->acts[k]->fetched = 0;
	}
	pthread_mutex_unlock(&t->lock);
	log_notice("caches dropped");
}

int tree_fresh_enough(const struct tree *t, double stamp, double now)
{
	return stamp > 0 && now - stamp < t->opts.ttl;
}

/*
 * Resolves @path to a node. Caller holds the lock. A record name that is
 * not known is looked for once more in a fresh listing when the one we
 * have is older than ttl; scratch names never cause a request. A name
 * that does not exist in a project resolves to NODE_NONE (with -ENOENT),
 * so that it can be created.
 */
int tree_resolve(struct tree *t, const char *path, struct node *n)
{
	char first[NAMES_FILE_MAX * 4];
	const char *rest;
	size_t len;
	struct project *p;
	struct action **a;
	enum names_kind kind;
	uint64_t id, aid = 0;
	int rc;

	memset(n, 0, sizeof(*n));
	while (*path == '/')
		path++;
	if (!*path) {
		n->kind = NODE_ROOT;
		return 0;
	}
	rest = strchr(path, '/');
	len = rest ? (size_t)(rest - path) : strlen(path);
	if (len >= sizeof(first))
		return -ENAMETOOLONG;
	memcpy(first, path, len);
	first[len] = '\0';
	rest = rest ? rest + 1 : "";
	n->name = rest;

	if (!strcmp(first, ".phfs"))
		return meta_resolve(t, rest, n);
	if (names_parse_dir(first, &id))
		return -ENOENT;
	if (!tree_find_project(t, id)) {
		if (tree_fresh_enough(t, t->projs_listed, tree_now()))
			return -ENOENT;
		rc = refresh_projects(t);
		if (rc)
			return rc;
		if (!tree_find_project(t, id))
			return -ENOENT;
	}
	n->pid = id;
	if (!*rest) {
		n->name = first;
		n->kind = NODE_PROJECT;
		return 0;
	}
	if (strchr(rest, '/'))
		return -ENOENT;
	if (strlen(rest) > 255)
		return -ENAMETOOLONG;
	p = tree_find_project(t, id);
	n->local = local_find(p, rest);
	if (n->local) {
		n->kind = NODE_LOCAL;
		return 0;
	}
	n->kind = NODE_NONE;
	kind = names_classify(rest, &aid);
	if (kind == NAMES_SCRATCH)
		return -ENOENT;
	if (!p->listed) {
		rc = tree_refresh_project(t, id);
		if (rc)
			return rc;
		p = tree_find_project(t, id);
	}
	for (int tries = 0; p && tries < 2; tries++) {
		uint64_t via = alias_lookup(p, rest);

		a = tree_find_action(p, via ? via : aid);
		if (a && !(*a)->hidden) {
			n->aid = (*a)->id;
			n->kind = NODE_ACTION;
			return 0;
		}
		if (a || (kind == NAMES_RECORD && !via) || tries ||
		    tree_fresh_enough(t, p->listed, tree_now()))
			break;
		rc = tree_refresh_project(t, id);
		if (rc)
			return rc;
		p = tree_find_project(t, id);
	}
	return -ENOENT;
}

void tree_fill_stat(struct tree *t, struct stat *st, int dir, off_t size,
		    const struct timespec *mtime)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = dir ? (S_IFDIR | (t->opts.ro ? 0555 : 0755))
			  : (S_IFREG | (t->opts.ro ? 0444 : 0644));
	st->st_nlink = dir ? 2 : 1;
	st->st_uid = t->opts.uid;
	st->st_gid = t->opts.gid;
	st->st_size = size;
	st->st_blksize = 4096;
	st->st_blocks = (size + 511) / 512;
	st->st_mtim = st->st_ctim = st->st_atim = mtime ? *mtime : t->mounted;
}

static void fill_local_stat(struct tree *t, struct stat *st,
			    const struct local *l)
{
	tree_fill_stat(t, st, 0, (off_t)l->len, &l->mtime);
	st->st_mode = l->mode;
	if (t->opts.ro)
		st->st_mode &= ~0222;
}

int tree_getattr(struct tree *t, const char *path, struct stat *st)
{
	struct node n;
	struct action **a;
	off_t size;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (rc) {
		pthread_mutex_unlock(&t->lock);
		return rc;
	}
	switch (n.kind) {
	case NODE_ROOT:
	case NODE_META:
	case NODE_PROJECT:
		tree_fill_stat(t, st, 1, 0, NULL);
		break;
	case NODE_ACTION:
		a = tree_find_action(tree_find_project(t, n.pid), n.aid);
		(*a)->attr_gen = kernel_size(*a, &size);
		(*a)->attr_path = kernel_path_hash(path);
		tree_fill_stat(t, st, 0, size, &(*a)->mtime);
		break;
	case NODE_LOCAL:
		fill_local_stat(t, st, n.local);
		break;
	case NODE_META_LOG:
	case NODE_META_STATS:
	case NODE_META_CSVDIR:
	case NODE_META_CSV:
		pthread_mutex_unlock(&t->lock);
		return meta_getattr(t, &n, st);
	case NODE_NONE:
		break;
	}
	pthread_mutex_unlock(&t->lock);
	return 0;
}

const char *tree_handle_name(const struct tree_handle *h)
{
	return h->fname;
}

/* The action @h reads, if it is still there. Lock held. */
struct action *tree_handle_action(struct tree *t,
				    const struct tree_handle *h)
{
	struct project *p = tree_find_project(t, h->pid);
	struct action **a = p ? tree_find_action(p, h->aid) : NULL;

	return a ? *a : NULL;
}

int tree_fgetattr(struct tree_handle *h, struct stat *st)
{
	struct tree *t = h->t;

	pthread_mutex_lock(&t->lock);
	if (h->kind == H_LOCAL) {
		fill_local_stat(t, st, h->local);
	} else {
		tree_fill_stat(t, st, 0, kernel_handle_stat(t, h), NULL);
		clock_gettime(CLOCK_REALTIME, &st->st_mtim);
	}
	pthread_mutex_unlock(&t->lock);
	return 0;
}

static int copy_project(struct tree *t, struct project *p, struct tree_dir *d)
{
	struct stat st;
	int rc = 0;

	for (size_t i = 0; !rc && i < p->nacts; i++) {
		struct action *a = p->acts[i];
		unsigned long gen;
		off_t size;

		if (a->hidden || local_find(p, a->fname))
			continue;
		gen = kernel_size(a, &size);
		tree_fill_stat(t, &st, 0, size, &a->mtime);
		rc = tree_dir_add(d, a->fname, &st);
		if (!rc) {
			d->aids[d->count - 1] = a->id;
			d->gens[d->count - 1] = gen;
		}
	}
	for (struct local *l = p->locals; !rc && l; l = l->next) {
		fill_local_stat(t, &st, l);
		rc = tree_dir_add(d, l->name, &st);
	}
	return rc;
}

struct tree_dir *tree_readdir(struct tree *t, const char *path, int *rc)
{
	struct tree_dir *d = calloc(1, sizeof(*d));
	struct stat st;
	struct node n;

	if (!d) {
		*rc = -ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&t->lock);
	*rc = tree_resolve(t, path, &n);
	if (!*rc && n.kind == NODE_ROOT)
		*rc = refresh_projects(t);
	else if (!*rc && n.kind == NODE_PROJECT)
		*rc = tree_refresh_project(t, n.pid);
	else if (!*rc && n.kind != NODE_META && n.kind != NODE_META_CSVDIR)
		*rc = -ENOTDIR;
	tree_fill_stat(t, &st, 1, 0, NULL);
	if (!*rc && n.kind == NODE_ROOT) {
		refresh_prefetch(t);
		for (size_t i = 0; !*rc && i < t->nprojs; i++)
			*rc = tree_dir_add(d, t->projs[i]->dname, &st);
		if (!*rc)
			*rc = tree_dir_add(d, ".phfs", &st);
		d->exact = 1;
	} else if (!*rc && n.kind == NODE_PROJECT) {
		*rc = copy_project(t, tree_find_project(t, n.pid), d);
		d->pid = n.pid;
		d->exact = 1;
	} else if (!*rc) {
		/* Sizes of .phfs files change with every read of them. */
		*rc = meta_readdir(t, &n, d);
	}
	pthread_mutex_unlock(&t->lock);
	if (*rc) {
		tree_dir_free(d);
		return NULL;
	}
	return d;
}

void tree_handle_register(struct tree *t, struct tree_handle *h)
{
	h->prev = NULL;
	h->next = t->handles;
	if (t->handles)
		t->handles->prev = h;
	t->handles = h;
}

/* Unchains @h. Lock held. */
static void handle_unregister(struct tree *t, struct tree_handle *h)
{
	if (h->prev)
		h->prev->next = h->next;
	else if (t->handles == h)
		t->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	h->prev = h->next = NULL;
}

static struct tree_handle *handle_new(struct tree *t, enum handle_kind kind,
				      const char *path)
{
	struct tree_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->t = t;
	h->kind = kind;
	snprintf(h->fname, sizeof(h->fname), "%s", path[0] == '/' ? path + 1 : path);
	return h;
}

/* An open action file: a snapshot to read, or a buffer to write. */
static int open_action(struct tree *t, struct node *n, int flags,
		       struct tree_handle *h, struct tree_open_result *out)
{
	struct action *a = *tree_find_action(tree_find_project(t, n->pid),
					     n->aid);

	/* What is read now is what a save will be compared with; a file
	 * opened only to be overwritten hands nothing out. */
	if ((flags & O_ACCMODE) != O_WRONLY || !a->base) {
		blob_unref(a->base);
		a->base = blob_ref(a->content);
	}
	h->pid = n->pid;
	h->aid = n->aid;
	if ((flags & O_ACCMODE) == O_RDONLY) {
		h->blob = blob_ref(a->content);
		kernel_open(t, a, h, out);
		return 0;
	}
	h->kind = H_ACTION;
	out->direct_io = 1; /* the buffer, not the server's bytes */
	kernel_writer(a, h);
	if (flags & O_TRUNC) {
		h->dirty = 1;
		return 0;
	}
	h->buf = malloc(a->content->len + 1);
	if (!h->buf)
		return -ENOMEM;
	memcpy(h->buf, a->content->data, a->content->len);
	h->len = h->cap = a->content->len;
	return 0;
}

int tree_open(struct tree *t, const char *path, int flags,
	      struct tree_open_result *out)
{
	struct tree_handle *h;
	struct node n;
	int rc, writing = (flags & O_ACCMODE) != O_RDONLY;

	memset(out, 0, sizeof(*out));
	h = handle_new(t, H_READ, path);
	if (!h)
		return -ENOMEM;
	h->append = !!(flags & O_APPEND);
	pthread_mutex_lock(&t->lock);
	rc = tree_resolve(t, path, &n);
	if (!rc && writing && t->opts.ro)
		rc = -EROFS;
	if (!rc && n.kind == NODE_ACTION && !((flags & O_TRUNC) && writing))
		rc = refresh_action(t, n.pid, n.aid);
	if (rc) {
		pthread_mutex_unlock(&t->lock);
		free(h);
		return rc;
	}
	switch (n.kind) {
	case NODE_ACTION:
		if (!tree_find_action(tree_find_project(t, n.pid), n.aid)) {
			rc = -ENOENT;
			break;
		}
		rc = open_action(t, &n, flags, h, out);
		break;
	case NODE_LOCAL:
		if ((n.local->mode & S_IFMT) != S_IFREG) {
			rc = -ELOOP;
			break;
		}
		h->kind = H_LOCAL;
		h->pid = n.pid;
		h->local = n.local;
		n.local->refs++;
		out->direct_io = 1;
		if (writing && (flags & O_TRUNC)) {
			rc = local_truncate(t, n.local, 0);
			h->dirty = 1;
		}
		break;
	case NODE_META_LOG:
	case NODE_META_STATS:
	case NODE_META_CSV:
		pthread_mutex_unlock(&t->lock);
		rc = writing ? -EACCES : meta_open(t, &n, h);
		if (rc) {
			free(h);
			return rc;
		}
		out->direct_io = 1;
		out->handle = h;
		pthread_mutex_lock(&t->lock);
		tree_handle_register(t, h);
		pthread_mutex_unlock(&t->lock);
		return 0;
	default:
		rc = -EISDIR;
	}
	if (!rc)
		tree_handle_register(t, h);
	pthread_mutex_unlock(&t->lock);
	if (rc) {
		tree_release(h);
		return rc;
	}
	out->handle = h;
	return 0;
}

ssize_t tree_read(struct tree_handle *h, char *buf, size_t size, off_t off)
{
	struct tree *t = h->t;
	const char *data;
	size_t len, n;

	if (off < 0)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	if (h->kind == H_LOCAL) {
		data = h->local->data;
		len = h->local->len;
	} else if (h->kind == H_ACTION) {
		data = h->buf;
		len = h->len;
	} else {
		data = h->blob->data;
		len = h->blob->len;
	}
	n = (size_t)off >= len ? 0 : len - (size_t)off;
	if (n > size)
		n = size;
	if (n)
		memcpy(buf, data + off, n);
	if (h->kind == H_READ && h->aid)
		t->reads_served++;
	pthread_mutex_unlock(&t->lock);
	return (ssize_t)n;
}

void tree_release(struct tree_handle *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->t->lock);
	handle_unregister(h->t, h);
	kernel_release(h->t, h);
	pthread_mutex_unlock(&h->t->lock);
	if (h->local) {
		pthread_mutex_lock(&h->t->lock);
		if (h->local->linked && !h->local->len &&
		    names_classify(h->local->name, &(uint64_t){0}) !=
			    NAMES_SCRATCH &&
		    !h->local->saved_once && h->local->refs == 2)
			log_notice("%s: empty at the last close, not sent",
				   h->fname);
		local_unref(h->t, h->local);
		pthread_mutex_unlock(&h->t->lock);
	}
	blob_unref(h->blob);
	free(h->buf);
	free(h);
}
