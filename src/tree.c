/*
 * tree: the mounted state (see tree.h).
 *
 * One mutex guards everything here; it is never held across a request.
 * A listing is refreshed by one thread at a time while the others wait
 * for its result. Open files hold a reference to the bytes they opened,
 * never a pointer into the tree, so a refresh can replace anything.
 */
#include "tree.h"
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

/* Rendered bytes, shared by the tree and every handle that opened them. */
struct blob {
	unsigned long refs;
	size_t len;
	char data[];
};

struct action {
	uint64_t id;
	char fname[NAMES_FILE_MAX];
	struct blob *content;
	double fetched;        /* monotonic time the content came */
	struct timespec mtime; /* created_at, or when a change was seen */
	unsigned long gen;     /* bumped when the content changes */
	unsigned long kernel_gen; /* the gen the kernel last cached */
};

struct project {
	uint64_t id;
	char dname[NAMES_FILE_MAX];
	struct action **acts; /* sorted by id */
	size_t nacts;
	double listed;        /* monotonic time of the listing; 0 = never */
	int refreshing;
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
	unsigned long cache_hits, cache_misses, served_stale;
};

struct tree_handle {
	struct blob *blob;
};

enum node_kind {
	NODE_ROOT,
	NODE_META,
	NODE_META_LOG,
	NODE_META_STATS,
	NODE_PROJECT,
	NODE_ACTION,
};

struct node {
	enum node_kind kind;
	uint64_t pid, aid;
};

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct blob *blob_new(const char *data, size_t len)
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

static struct blob *blob_ref(struct blob *b)
{
	__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
	return b;
}

static void blob_unref(struct blob *b)
{
	if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(b);
}

static void action_free(struct action *a)
{
	if (!a)
		return;
	blob_unref(a->content);
	free(a);
}

static void project_free(struct project *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nacts; i++)
		action_free(p->acts[i]);
	free(p->acts);
	free(p);
}

/* "2024-01-02T03:04:05.123456Z" (or an offset) into a timespec. */
static int parse_time(const char *s, struct timespec *out)
{
	struct tm tm = {0};
	int n = 0, oh = 0, om = 0;
	long nsec = 0;
	double frac = 0;
	char sign;
	time_t t;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year,
			 &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
			 &tm.tm_sec, &n) != 6)
		return -1;
	s += n;
	if (*s == '.') {
		char *end;

		frac = strtod(s, &end);
		nsec = (long)(frac * 1e9);
		s = end;
	}
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	if ((*s == '+' || *s == '-') &&
	    sscanf(s, "%c%2d:%2d", &sign, &oh, &om) == 3)
		t -= (sign == '-' ? -1 : 1) * (oh * 3600 + om * 60);
	out->tv_sec = t;
	out->tv_nsec = nsec;
	return 0;
}

/* A new action from one server object, rendered; NULL if unusable. */
static struct action *action_from_json(const cJSON *item)
{
	struct action *a;
	char *text;
	size_t len;

	if (!cJSON_IsObject(item))
		return NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	if (listing_item_id(item, &a->id)) {
		free(a);
		return NULL;
	}
	names_action_file(a->id, listing_item_name(item), a->fname);
	text = action_render(item, &len);
	a->content = text ? blob_new(text, len) : NULL;
	free(text);
	if (!a->content) {
		free(a);
		return NULL;
	}
	if (parse_time(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
			       item, "created_at")),
		       &a->mtime))
		clock_gettime(CLOCK_REALTIME, &a->mtime);
	return a;
}

static int is_deleted(const cJSON *item)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "deleted"));
}

static int cmp_action(const void *x, const void *y)
{
	const struct action *a = *(struct action *const *)x;
	const struct action *b = *(struct action *const *)y;

	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return a->gen < b->gen ? -1 : a->gen > b->gen;
}

static int cmp_project(const void *x, const void *y)
{
	const struct project *a = *(struct project *const *)x;
	const struct project *b = *(struct project *const *)y;

	return a->id < b->id ? -1 : a->id > b->id;
}

static struct action **find_action(struct project *p, uint64_t id)
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

static struct project *find_project(struct tree *t, uint64_t id)
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

/*
 * Takes over @fresh in place of @old (same id): keeps the old bytes,
 * generation and mtime when nothing changed.
 */
static void action_update(struct action *old, struct action *fresh)
{
	fresh->kernel_gen = old->kernel_gen;
	if (old->content->len == fresh->content->len &&
	    !memcmp(old->content->data, fresh->content->data,
		    old->content->len)) {
		blob_unref(fresh->content);
		fresh->content = blob_ref(old->content);
		fresh->gen = old->gen;
		fresh->mtime = old->mtime;
	} else {
		fresh->gen = old->gen + 1;
		clock_gettime(CLOCK_REALTIME, &fresh->mtime);
	}
}

/*
 * Builds the sorted, de-duplicated action array of a list answer. Items
 * that are not actions are skipped with a log line; of two items with
 * one id the later wins.
 */
static struct action **actions_from_list(const cJSON *items, double now,
					 size_t *count, const char *where)
{
	size_t n = (size_t)cJSON_GetArraySize(items), k = 0, bad = 0;
	struct action **arr = calloc(n ? n : 1, sizeof(*arr));
	const cJSON *it;

	if (!arr)
		return NULL;
	cJSON_ArrayForEach(it, items)
	{
		struct action *a;

		if (is_deleted(it))
			continue;
		a = action_from_json(it);
		if (!a) {
			bad++;
			continue;
		}
		a->fetched = now;
		a->gen = k; /* list position, to order equal ids */
		arr[k++] = a;
	}
	if (bad)
		log_warn("%s: skipped %zu list items that are not actions",
			 where, bad);
	qsort(arr, k, sizeof(*arr), cmp_action);
	{
		size_t w = 0;

		for (size_t i = 0; i < k; i++) {
			if (w && arr[w - 1]->id == arr[i]->id) {
				/* The same id twice: the later item wins. */
				action_free(arr[w - 1]);
				arr[w - 1] = arr[i];
				continue;
			}
			arr[w++] = arr[i];
		}
		for (size_t i = 0; i < w; i++)
			arr[i]->gen = 0;
		k = w;
	}
	*count = k;
	return arr;
}

/* Installs a fresh listing into @p. Caller holds the lock. */
static void project_install(struct project *p, struct action **fresh,
			    size_t n, double now)
{
	for (size_t i = 0; i < n; i++) {
		struct action **old = find_action(p, fresh[i]->id);

		if (old) {
			action_update(*old, fresh[i]);
		} else if (p->listed) {
			/* New since the last listing: its mtime is now. */
			clock_gettime(CLOCK_REALTIME, &fresh[i]->mtime);
		}
	}
	for (size_t i = 0; i < p->nacts; i++)
		action_free(p->acts[i]);
	free(p->acts);
	p->acts = fresh;
	p->nacts = n;
	p->listed = now;
}

static int fresh_enough(const struct tree *t, double stamp, double now)
{
	return stamp > 0 && now - stamp < t->opts.ttl;
}

/*
 * Makes sure project @pid has a listing younger than ttl. Called and
 * returns with the lock held; drops it during the request. When the
 * server cannot be reached and a listing exists, serves that.
 */
static int refresh_project(struct tree *t, uint64_t pid)
{
	struct project *p;
	struct api_err e = {0};
	struct action **fresh;
	cJSON *items = NULL;
	size_t n = 0;
	char where[NAMES_FILE_MAX + 8];
	double now;
	int rc;

	for (;;) {
		p = find_project(t, pid);
		if (!p)
			return -ENOENT;
		if (!p->refreshing)
			break;
		pthread_cond_wait(&t->refreshed, &t->lock);
	}
	now = now_mono();
	if (fresh_enough(t, p->listed, now)) {
		t->cache_hits++;
		return 0;
	}
	t->cache_misses++;
	p->refreshing = 1;
	snprintf(where, sizeof(where), "%s/", p->dname);
	pthread_mutex_unlock(&t->lock);

	rc = api_list_actions(t->api, pid, &items, &e);
	fresh = rc ? NULL : actions_from_list(items, now_mono(), &n, where);
	cJSON_Delete(items);
	if (!rc && !fresh)
		rc = -ENOMEM;

	pthread_mutex_lock(&t->lock);
	p = find_project(t, pid);
	if (p) {
		p->refreshing = 0;
		if (!rc) {
			project_install(p, fresh, n, now_mono());
			fresh = NULL;
		} else if (p->listed && e.err == EIO) {
			/* Unreachable: keep serving what we have, and do
			 * not ask again before another ttl. */
			log_notice("%s: serving the cached listing: %s",
				   where, e.msg);
			t->served_stale++;
			p->listed = now_mono();
			rc = 0;
		} else {
			log_error("%s: cannot list actions: %s", where,
				  e.msg);
		}
	}
	pthread_cond_broadcast(&t->refreshed);
	if (fresh) {
		for (size_t i = 0; i < n; i++)
			action_free(fresh[i]);
		free(fresh);
	}
	return rc;
}

/* Builds the sorted project array from a list of project objects. */
static struct project **projects_from_json(const cJSON *items, size_t *count)
{
	size_t n = (size_t)cJSON_GetArraySize(items), k = 0;
	struct project **arr = calloc(n ? n : 1, sizeof(*arr));
	const cJSON *it;

	if (!arr)
		return NULL;
	cJSON_ArrayForEach(it, items)
	{
		struct project *p = calloc(1, sizeof(*p));

		if (!p || listing_item_id(it, &p->id)) {
			free(p);
			continue;
		}
		names_project_dir(p->id, listing_item_name(it), p->dname);
		arr[k++] = p;
	}
	qsort(arr, k, sizeof(*arr), cmp_project);
	{
		size_t w = 0;

		for (size_t i = 0; i < k; i++) {
			if (w && arr[w - 1]->id == arr[i]->id) {
				project_free(arr[i]);
				continue;
			}
			arr[w++] = arr[i];
		}
		k = w;
	}
	*count = k;
	return arr;
}

/* Fetches the project list: every project, or each of -o project=. */
static int fetch_projects(struct tree *t, cJSON **items, struct api_err *e)
{
	if (!t->opts.nprojects)
		return api_list_projects(t->api, items, e);
	*items = cJSON_CreateArray();
	for (size_t i = 0; i < t->opts.nprojects; i++) {
		cJSON *one = NULL;
		int rc = api_get_project(t->api, t->opts.projects[i], &one, e);

		if (rc) {
			cJSON_Delete(*items);
			*items = NULL;
			return rc;
		}
		cJSON_AddItemToArray(*items, one);
	}
	return 0;
}

/* Replaces the project list, keeping the listings of those that stay. */
static void projects_install(struct tree *t, struct project **fresh,
			     size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct project *old = find_project(t, fresh[i]->id);

		if (old && !old->refreshing) {
			fresh[i]->acts = old->acts;
			fresh[i]->nacts = old->nacts;
			fresh[i]->listed = old->listed;
			old->acts = NULL;
			old->nacts = 0;
		}
	}
	for (size_t i = 0; i < t->nprojs; i++)
		project_free(t->projs[i]);
	free(t->projs);
	t->projs = fresh;
	t->nprojs = n;
	t->projs_listed = now_mono();
}

/* Like refresh_project, for the list of projects. */
static int refresh_projects(struct tree *t)
{
	struct api_err e = {0};
	struct project **fresh = NULL;
	cJSON *items = NULL;
	size_t n = 0;
	int rc;

	while (t->projs_refreshing)
		pthread_cond_wait(&t->refreshed, &t->lock);
	if (fresh_enough(t, t->projs_listed, now_mono())) {
		t->cache_hits++;
		return 0;
	}
	t->cache_misses++;
	t->projs_refreshing = 1;
	pthread_mutex_unlock(&t->lock);

	rc = fetch_projects(t, &items, &e);
	if (!rc) {
		fresh = projects_from_json(items, &n);
		if (!fresh)
			rc = -ENOMEM;
	}
	cJSON_Delete(items);

	pthread_mutex_lock(&t->lock);
	t->projs_refreshing = 0;
	/* A project being refreshed keeps its place until it is done. */
	for (size_t i = 0; i < t->nprojs && !rc; i++)
		while (t->projs[i]->refreshing)
			pthread_cond_wait(&t->refreshed, &t->lock);
	if (!rc) {
		projects_install(t, fresh, n);
	} else if (t->projs_listed && e.err == EIO) {
		log_notice("serving the cached project list: %s", e.msg);
		t->served_stale++;
		t->projs_listed = now_mono();
		rc = 0;
	} else {
		log_error("cannot list projects: %s", e.msg);
	}
	pthread_cond_broadcast(&t->refreshed);
	return rc;
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

void tree_free(struct tree *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nprojs; i++)
		project_free(t->projs[i]);
	free(t->projs);
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->refreshed);
	free(t);
}

int tree_premount(struct tree *t, struct api_err *e)
{
	struct project **fresh;
	cJSON *items = NULL;
	size_t n = 0;
	int rc = fetch_projects(t, &items, e);

	if (rc)
		return rc;
	fresh = projects_from_json(items, &n);
	cJSON_Delete(items);
	if (!fresh) {
		e->err = ENOMEM;
		snprintf(e->msg, sizeof(e->msg), "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_lock(&t->lock);
	projects_install(t, fresh, n);
	pthread_mutex_unlock(&t->lock);
	return 0;
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

/*
 * Resolves @path to a node. Caller holds the lock. A name that is not
 * known is looked for once more in a fresh listing when the one we have
 * is older than ttl; scratch names never cause a request.
 */
static int resolve(struct tree *t, const char *path, struct node *n)
{
	char first[NAMES_FILE_MAX * 4];
	const char *rest;
	size_t len;
	struct project *p;
	uint64_t id;
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

	if (!strcmp(first, ".phfs")) {
		if (!*rest)
			n->kind = NODE_META;
		else if (!strcmp(rest, "log"))
			n->kind = NODE_META_LOG;
		else if (!strcmp(rest, "stats"))
			n->kind = NODE_META_STATS;
		else
			return -ENOENT;
		return 0;
	}
	if (names_parse_dir(first, &id))
		return -ENOENT;
	if (!find_project(t, id)) {
		if (fresh_enough(t, t->projs_listed, now_mono()))
			return -ENOENT;
		rc = refresh_projects(t);
		if (rc)
			return rc;
		if (!find_project(t, id))
			return -ENOENT;
	}
	n->pid = id;
	if (!*rest) {
		n->kind = NODE_PROJECT;
		return 0;
	}
	if (strchr(rest, '/') ||
	    names_classify(rest, &n->aid) != NAMES_RECORD_ID)
		return -ENOENT;
	p = find_project(t, id);
	if (!p->listed || (!find_action(p, n->aid) &&
			   !fresh_enough(t, p->listed, now_mono()))) {
		rc = refresh_project(t, id);
		if (rc)
			return rc;
		p = find_project(t, id);
	}
	if (!p || !find_action(p, n->aid))
		return -ENOENT;
	n->kind = NODE_ACTION;
	return 0;
}

static char *stats_text(struct tree *t, size_t *len)
{
	struct api_stats s;
	unsigned long hits, misses, stale, projs = 0, acts = 0;
	char *out = NULL;
	int n;

	api_stats(t->api, &s);
	pthread_mutex_lock(&t->lock);
	hits = t->cache_hits;
	misses = t->cache_misses;
	stale = t->served_stale;
	projs = t->nprojs;
	for (size_t i = 0; i < t->nprojs; i++)
		acts += t->projs[i]->nacts;
	pthread_mutex_unlock(&t->lock);
	n = asprintf(&out,
		     "requests_total %lu\nrequests_get %lu\n"
		     "requests_post %lu\nrequests_patch %lu\n"
		     "requests_put %lu\nrequests_delete %lu\n"
		     "retries %lu\nfailures %lu\ncache_hits %lu\n"
		     "cache_misses %lu\nserved_stale %lu\nprojects %lu\n"
		     "actions_cached %lu\n",
		     s.get + s.post + s.patch + s.put + s.del, s.get, s.post,
		     s.patch, s.put, s.del, s.retries, s.failures, hits,
		     misses, stale, projs, acts);
	if (n < 0)
		return NULL;
	*len = (size_t)n;
	return out;
}

static char *meta_text(struct tree *t, enum node_kind kind, size_t *len)
{
	return kind == NODE_META_LOG ? log_ring_text(len)
				     : stats_text(t, len);
}

static void fill_stat(struct tree *t, struct stat *st, int dir, off_t size,
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

int tree_getattr(struct tree *t, const char *path, struct stat *st)
{
	struct node n;
	struct action **a;
	size_t len = 0;
	char *text;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = resolve(t, path, &n);
	if (rc) {
		pthread_mutex_unlock(&t->lock);
		return rc;
	}
	switch (n.kind) {
	case NODE_ROOT:
	case NODE_META:
	case NODE_PROJECT:
		fill_stat(t, st, 1, 0, NULL);
		break;
	case NODE_ACTION:
		a = find_action(find_project(t, n.pid), n.aid);
		fill_stat(t, st, 0, (off_t)(*a)->content->len, &(*a)->mtime);
		break;
	case NODE_META_LOG:
	case NODE_META_STATS:
		pthread_mutex_unlock(&t->lock);
		text = meta_text(t, n.kind, &len);
		free(text);
		fill_stat(t, st, 0, (off_t)len, NULL);
		st->st_mode &= ~0222;
		clock_gettime(CLOCK_REALTIME, &st->st_mtim);
		return 0;
	}
	pthread_mutex_unlock(&t->lock);
	return 0;
}

int tree_readdir(struct tree *t, const char *path, tree_fill_fn fill,
		 void *ctx)
{
	struct stat st;
	struct node n;
	struct project *p;
	char **names = NULL;
	struct stat *stats = NULL;
	size_t count = 0;
	int rc;

	pthread_mutex_lock(&t->lock);
	rc = resolve(t, path, &n);
	if (!rc && n.kind == NODE_ROOT)
		rc = refresh_projects(t);
	else if (!rc && n.kind == NODE_PROJECT)
		rc = refresh_project(t, n.pid);
	else if (!rc && n.kind != NODE_META)
		rc = -ENOTDIR;
	if (rc) {
		pthread_mutex_unlock(&t->lock);
		return rc;
	}
	/* Copy the entries out: fill() must not run under the lock. */
	if (n.kind == NODE_ROOT) {
		names = calloc(t->nprojs + 1, sizeof(*names));
		stats = calloc(t->nprojs + 1, sizeof(*stats));
		for (size_t i = 0; names && stats && i < t->nprojs; i++) {
			names[count] = strdup(t->projs[i]->dname);
			fill_stat(t, &stats[count++], 1, 0, NULL);
		}
		if (names && stats) {
			names[count] = strdup(".phfs");
			fill_stat(t, &stats[count++], 1, 0, NULL);
		}
	} else if (n.kind == NODE_PROJECT) {
		p = find_project(t, n.pid);
		names = calloc(p->nacts + 1, sizeof(*names));
		stats = calloc(p->nacts + 1, sizeof(*stats));
		for (size_t i = 0; names && stats && i < p->nacts; i++) {
			struct action *a = p->acts[i];

			names[count] = strdup(a->fname);
			fill_stat(t, &stats[count++], 0,
				  (off_t)a->content->len, &a->mtime);
		}
	} else {
		names = calloc(2, sizeof(*names));
		stats = calloc(2, sizeof(*stats));
		if (names && stats) {
			names[0] = strdup("log");
			names[1] = strdup("stats");
			fill_stat(t, &stats[0], 0, 0, NULL);
			fill_stat(t, &stats[1], 0, 0, NULL);
			count = 2;
		}
	}
	pthread_mutex_unlock(&t->lock);
	if (!names || !stats)
		rc = -ENOMEM;

	fill_stat(t, &st, 1, 0, NULL);
	if (!rc && !fill(ctx, ".", &st) && !fill(ctx, "..", &st))
		for (size_t i = 0; i < count; i++)
			if (names[i] && fill(ctx, names[i], &stats[i]))
				break;
	for (size_t i = 0; names && i < count; i++)
		free(names[i]);
	free(names);
	free(stats);
	return rc;
}

/*
 * Gets action @aid again when its copy is older than ttl. Caller holds
 * the lock; dropped during the request. Serves the cached copy when the
 * server cannot be reached.
 */
static int refresh_action(struct tree *t, uint64_t pid, uint64_t aid)
{
	struct project *p = find_project(t, pid);
	struct action **slot = find_action(p, aid);
	struct action *fresh = NULL;
	struct api_err e = {0};
	char fname[NAMES_FILE_MAX];
	cJSON *item = NULL;
	int rc, deleted = 0;

	if (fresh_enough(t, (*slot)->fetched, now_mono())) {
		t->cache_hits++;
		return 0;
	}
	t->cache_misses++;
	snprintf(fname, sizeof(fname), "%s", (*slot)->fname);
	pthread_mutex_unlock(&t->lock);

	rc = api_get_action(t->api, pid, aid, &item, &e);
	if (!rc) {
		deleted = is_deleted(item);
		fresh = deleted ? NULL : action_from_json(item);
		if (!deleted && !fresh) {
			rc = -EIO;
			snprintf(e.msg, sizeof(e.msg),
				 "the server's answer is not an action");
		}
		if (fresh)
			fresh->fetched = now_mono();
	}
	cJSON_Delete(item);

	pthread_mutex_lock(&t->lock);
	p = find_project(t, pid);
	slot = p ? find_action(p, aid) : NULL;
	if (!slot) {
		action_free(fresh);
		return -ENOENT;
	}
	if (deleted || rc == -ENOENT) {
		/* Gone on the server: forget it. */
		size_t at = (size_t)(slot - p->acts);

		action_free(*slot);
		memmove(slot, slot + 1, (p->nacts - at - 1) * sizeof(*slot));
		p->nacts--;
		return -ENOENT;
	}
	if (rc == -EIO) {
		log_notice("%s/%s: serving the cached copy: %s", p->dname,
			   fname, e.msg);
		t->served_stale++;
		(*slot)->fetched = now_mono();
		return 0;
	}
	if (rc) {
		log_error("%s/%s: %s", p->dname, fname, e.msg);
		return rc;
	}
	action_update(*slot, fresh);
	action_free(*slot);
	*slot = fresh;
	return 0;
}

int tree_open(struct tree *t, const char *path, int flags,
	      struct tree_open_result *out)
{
	struct tree_handle *h;
	struct action **a;
	struct node n;
	size_t len = 0;
	char *text;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		return -EROFS;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	rc = resolve(t, path, &n);
	if (!rc && n.kind == NODE_ACTION)
		rc = refresh_action(t, n.pid, n.aid);
	if (rc) {
		pthread_mutex_unlock(&t->lock);
		free(h);
		return rc;
	}
	switch (n.kind) {
	case NODE_ACTION:
		a = find_action(find_project(t, n.pid), n.aid);
		h->blob = blob_ref((*a)->content);
		out->keep_cache = (*a)->kernel_gen == (*a)->gen;
		(*a)->kernel_gen = (*a)->gen;
		pthread_mutex_unlock(&t->lock);
		break;
	case NODE_META_LOG:
	case NODE_META_STATS:
		pthread_mutex_unlock(&t->lock);
		text = meta_text(t, n.kind, &len);
		h->blob = text ? blob_new(text, len) : NULL;
		free(text);
		out->direct_io = 1;
		if (!h->blob) {
			free(h);
			return -ENOMEM;
		}
		break;
	default:
		pthread_mutex_unlock(&t->lock);
		free(h);
		return -EISDIR;
	}
	out->handle = h;
	return 0;
}

ssize_t tree_read(struct tree_handle *h, char *buf, size_t size, off_t off)
{
	size_t n;

	if (off < 0)
		return -EINVAL;
	if ((size_t)off >= h->blob->len)
		return 0;
	n = h->blob->len - (size_t)off;
	if (n > size)
		n = size;
	memcpy(buf, h->blob->data + off, n);
	return (ssize_t)n;
}

void tree_release(struct tree_handle *h)
{
	if (!h)
		return;
	blob_unref(h->blob);
	free(h);
}
