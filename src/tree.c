/*
 * tree: the mounted state (see tree.h).
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

static void action_free(struct action *a)
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

static void project_free(struct tree *t, struct project *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nacts; i++)
		action_free(p->acts[i]);
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
struct action *tree_action_from_json(const cJSON *item)
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
	tree_kernel_unknown(a);
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

/*
 * Takes over @fresh in place of @old (same id): keeps the old bytes,
 * generation and mtime when nothing changed.
 */
static void action_update(struct action *old, struct action *fresh)
{
	fresh->attr_gen = old->attr_gen;
	fresh->attr_path = old->attr_path;
	fresh->page_gen = old->page_gen;
	fresh->page_path = old->page_path;
	fresh->page_opens = old->page_opens;
	fresh->writers = old->writers;
	fresh->hidden = old->hidden;
	fresh->saved = old->saved;
	if (!fresh->base && old->base)
		fresh->base = blob_ref(old->base);
	if (old->content->len == fresh->content->len &&
	    !memcmp(old->content->data, fresh->content->data,
		    old->content->len)) {
		blob_unref(fresh->content);
		fresh->content = blob_ref(old->content);
		fresh->gen = old->gen;
		fresh->changed = old->changed;
		fresh->mtime = old->mtime;
	} else {
		fresh->gen = old->gen + 1;
		fresh->changed = tree_now();
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
		a = tree_action_from_json(it);
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
			    size_t n, double now, double asked)
{
	for (size_t i = 0; i < n; i++) {
		struct action **old = tree_find_action(p, fresh[i]->id);

		if (old && (*old)->saved > asked) {
			/* Saved after this listing was asked for: the answer
			 * is older than what we have. Swap, so the answer's
			 * copy is freed with the old array. */
			struct action *kept = *old;

			*old = fresh[i];
			fresh[i] = kept;
		} else if (old) {
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

void tree_put_action(struct project *p, struct action *fresh)
{
	struct action **slot = tree_find_action(p, fresh->id), **grown;
	size_t at = 0;

	if (slot) {
		action_update(*slot, fresh);
		action_free(*slot);
		*slot = fresh;
		return;
	}
	grown = realloc(p->acts, (p->nacts + 1) * sizeof(*grown));
	if (!grown) {
		action_free(fresh); /* the next listing brings it */
		return;
	}
	p->acts = grown;
	while (at < p->nacts && p->acts[at]->id < fresh->id)
		at++;
	memmove(p->acts + at + 1, p->acts + at,
		(p->nacts - at) * sizeof(*p->acts));
	p->acts[at] = fresh;
	p->nacts++;
}

void tree_drop_action(struct project *p, uint64_t id)
{
	struct action **slot = tree_find_action(p, id);
	size_t at, w = 0;

	if (slot) {
		at = (size_t)(slot - p->acts);
		action_free(*slot);
		memmove(slot, slot + 1, (p->nacts - at - 1) * sizeof(*slot));
		p->nacts--;
	}
	for (size_t i = 0; i < p->naliases; i++) {
		if (p->aliases[i].id == id)
			free(p->aliases[i].name);
		else
			p->aliases[w++] = p->aliases[i];
	}
	p->naliases = w;
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
int tree_refresh_project(struct tree *t, uint64_t pid)
{
	struct project *p;
	struct api_err e = {0};
	struct action **fresh;
	cJSON *items = NULL;
	size_t n = 0;
	char where[NAMES_FILE_MAX + 8];
	double now, asked;
	int rc;

	for (;;) {
		p = tree_find_project(t, pid);
		if (!p)
			return -ENOENT;
		if (!p->refreshing)
			break;
		pthread_cond_wait(&t->refreshed, &t->lock);
	}
	now = tree_now();
	if (fresh_enough(t, p->listed, now)) {
		t->cache_hits++;
		return 0;
	}
	t->cache_misses++;
	p->refreshing = 1;
	asked = tree_now();
	snprintf(where, sizeof(where), "%s/", p->dname);
	pthread_mutex_unlock(&t->lock);

	rc = api_list_actions(t->api, pid, &items, &e);
	fresh = rc ? NULL : actions_from_list(items, tree_now(), &n, where);
	cJSON_Delete(items);
	if (!rc && !fresh)
		rc = -ENOMEM;

	pthread_mutex_lock(&t->lock);
	p = tree_find_project(t, pid);
	if (p) {
		p->refreshing = 0;
		if (!rc) {
			project_install(p, fresh, n, tree_now(), asked);
			fresh = NULL;
		} else if (p->listed && e.err == EIO) {
			/* Unreachable: keep serving what we have, and do
			 * not ask again before another ttl. */
			log_notice("%s: serving the cached listing: %s",
				   where, e.msg);
			t->served_stale++;
			p->listed = tree_now();
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
				free(arr[i]);
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
		struct project *old = tree_find_project(t, fresh[i]->id);

		if (old && !old->refreshing) {
			fresh[i]->acts = old->acts;
			fresh[i]->nacts = old->nacts;
			fresh[i]->listed = old->listed;
			fresh[i]->locals = old->locals;
			fresh[i]->aliases = old->aliases;
			fresh[i]->naliases = old->naliases;
			fresh[i]->csv = old->csv;
			fresh[i]->csv_fetched = old->csv_fetched;
			old->csv = NULL;
			old->acts = NULL;
			old->nacts = 0;
			old->locals = NULL;
			old->aliases = NULL;
			old->naliases = 0;
		}
	}
	for (size_t i = 0; i < t->nprojs; i++)
		project_free(t, t->projs[i]);
	free(t->projs);
	t->projs = fresh;
	t->nprojs = n;
	t->projs_listed = tree_now();
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
	if (fresh_enough(t, t->projs_listed, tree_now())) {
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
		t->projs_listed = tree_now();
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

/* Parallel listings of the projects a root listing showed, so that a
 * walk of the tree (grep -r, rsync, find) finds them ready. */
struct prefetch {
	struct tree *t;
	uint64_t *pids;
	size_t n, next;
	size_t workers; /* still running; the last frees this */
};

#define PREFETCH_WORKERS 8

static void *prefetch_worker(void *arg)
{
	struct prefetch *pf = arg;
	struct tree *t = pf->t;

	pthread_mutex_lock(&t->lock);
	tree_call_begin(t);
	while (pf->next < pf->n) {
		uint64_t pid = pf->pids[pf->next++];

		/* Failures are logged there; the next access tries again. */
		tree_refresh_project(t, pid);
		tree_call_begin(t);
	}
	if (--t->prefetching == 0)
		pthread_cond_broadcast(&t->refreshed);
	if (--pf->workers == 0) {
		free(pf->pids);
		free(pf);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

/* Starts listing every project not listed within ttl. Lock held. */
static void prefetch_projects(struct tree *t)
{
	struct prefetch *pf;
	double now = tree_now();
	pthread_attr_t attr;
	size_t workers;

	if (t->stopping)
		return;
	pf = calloc(1, sizeof(*pf));
	if (!pf)
		return;
	pf->t = t;
	pf->pids = calloc(t->nprojs ? t->nprojs : 1, sizeof(*pf->pids));
	for (size_t i = 0; pf->pids && i < t->nprojs; i++)
		if (!t->projs[i]->refreshing &&
		    !fresh_enough(t, t->projs[i]->listed, now))
			pf->pids[pf->n++] = t->projs[i]->id;
	if (!pf->n) {
		free(pf->pids);
		free(pf);
		return;
	}
	workers = pf->n < PREFETCH_WORKERS ? pf->n : PREFETCH_WORKERS;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (size_t i = 0; i < workers; i++) {
		pthread_t th;

		pf->workers++;
		t->prefetching++;
		if (pthread_create(&th, &attr, prefetch_worker, pf)) {
			pf->workers--;
			t->prefetching--;
			break;
		}
	}
	pthread_attr_destroy(&attr);
	if (!pf->workers) {
		free(pf->pids);
		free(pf);
	}
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
		project_free(t, t->projs[i]);
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

void tree_set_kernel_cache(struct tree *t, double attr_timeout, int notify)
{
	pthread_mutex_lock(&t->lock);
	t->attr_timeout = attr_timeout;
	t->kernel_notify = notify;
	pthread_mutex_unlock(&t->lock);
}

/* Set by a save during the current call of this thread. */
static __thread int call_saved;

void tree_call_begin(struct tree *t)
{
	call_saved = 0;
	api_call_begin(t->api);
}

void tree_note_saved(struct tree *t)
{
	if (t->kernel_notify)
		call_saved = 1;
}

void tree_kernel_unknown(struct action *a)
{
	a->attr_gen = a->page_gen = KERNEL_NONE;
}

void tree_forget_pages(struct tree *t, uint64_t pid, uint64_t aid)
{
	struct project *p = tree_find_project(t, pid);
	struct action **a = p ? tree_find_action(p, aid) : NULL;

	if (a)
		tree_kernel_unknown(*a);
}

int tree_call_saved(void)
{
	return call_saved;
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
		if (fresh_enough(t, t->projs_listed, tree_now()))
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
		    fresh_enough(t, p->listed, tree_now()))
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

/* FNV-1a of a path without its leading '/': which name (inode) of an
 * action the kernel holds something of. */
static uint64_t path_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	if (*s == '/')
		s++;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
	return h;
}

/* The path_hash of "<project dir>/<name>". */
static uint64_t dir_entry_hash(const struct project *p, const char *name)
{
	char path[NAMES_FILE_MAX * 4];

	snprintf(path, sizeof(path), "%s/%s", p->dname, name);
	return path_hash(path);
}

int tree_getattr(struct tree *t, const char *path, struct stat *st)
{
	struct node n;
	struct action **a;
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
		tree_fill_stat(t, st, 0, (off_t)(*a)->content->len, &(*a)->mtime);
		(*a)->attr_gen = (*a)->gen;
		(*a)->attr_path = path_hash(path);
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
static struct action *handle_action(struct tree *t,
				    const struct tree_handle *h)
{
	struct project *p = tree_find_project(t, h->pid);
	struct action **a = p ? tree_find_action(p, h->aid) : NULL;

	return a ? *a : NULL;
}

/* The size of an older version went to the kernel: its cache of the
 * action is of no known version. Lock held. */
static void forget_pages(struct tree *t, const struct tree_handle *h)
{
	struct action *a = handle_action(t, h);

	if (a && a->content != h->blob)
		tree_kernel_unknown(a);
}

int tree_fgetattr(struct tree_handle *h, struct stat *st)
{
	struct tree *t = h->t;

	pthread_mutex_lock(&t->lock);
	if (h->kind == H_LOCAL) {
		fill_local_stat(t, st, h->local);
	} else {
		tree_fill_stat(t, st, 0,
			  (off_t)(h->kind == H_ACTION ? h->len : h->blob->len),
			  NULL);
		clock_gettime(CLOCK_REALTIME, &st->st_mtim);
		if (h->kind == H_READ && h->aid)
			forget_pages(t, h);
	}
	pthread_mutex_unlock(&t->lock);
	return 0;
}

/* Grows @arr (of @size-byte items) to @cap items; 0 or -ENOMEM. */
static int grow(void *arr, size_t size, size_t cap)
{
	void *p = realloc(*(void **)arr, cap * size);

	if (!p)
		return -ENOMEM;
	*(void **)arr = p;
	return 0;
}

int tree_dir_add(struct tree_dir *d, const char *name, const struct stat *st)
{
	if (d->count == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;

		if (grow(&d->names, sizeof(*d->names), cap) ||
		    grow(&d->stats, sizeof(*d->stats), cap) ||
		    grow(&d->aids, sizeof(*d->aids), cap) ||
		    grow(&d->gens, sizeof(*d->gens), cap))
			return -ENOMEM;
		d->cap = cap;
	}
	d->names[d->count] = strdup(name);
	if (!d->names[d->count])
		return -ENOMEM;
	d->aids[d->count] = 0;
	d->gens[d->count] = 0;
	d->stats[d->count++] = *st;
	return 0;
}

size_t tree_dir_count(const struct tree_dir *d)
{
	return d->count;
}

const char *tree_dir_name(const struct tree_dir *d, size_t i)
{
	return d->names[i];
}

const struct stat *tree_dir_stat(const struct tree_dir *d, size_t i)
{
	return &d->stats[i];
}

int tree_dir_exact(const struct tree_dir *d)
{
	return d->exact;
}

void tree_dir_free(struct tree_dir *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->count; i++)
		free(d->names[i]);
	free(d->names);
	free(d->stats);
	free(d->aids);
	free(d->gens);
	free(d);
}

static int copy_project(struct tree *t, struct project *p, struct tree_dir *d)
{
	struct stat st;
	int rc = 0;

	for (size_t i = 0; !rc && i < p->nacts; i++) {
		struct action *a = p->acts[i];

		if (a->hidden || local_find(p, a->fname))
			continue;
		tree_fill_stat(t, &st, 0, (off_t)a->content->len, &a->mtime);
		rc = tree_dir_add(d, a->fname, &st);
		if (!rc) {
			d->aids[d->count - 1] = a->id;
			d->gens[d->count - 1] = a->gen;
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
		prefetch_projects(t);
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

void tree_dir_given(struct tree *t, const struct tree_dir *d, size_t from,
		    size_t to)
{
	struct project *p;

	pthread_mutex_lock(&t->lock);
	p = d->pid ? tree_find_project(t, d->pid) : NULL;
	for (size_t i = from; p && i < to && i < d->count; i++) {
		struct action **a =
			d->aids[i] ? tree_find_action(p, d->aids[i]) : NULL;

		if (!a)
			continue;
		if ((*a)->gen != d->gens[i]) {
			tree_kernel_unknown(*a); /* an older size went */
			continue;
		}
		(*a)->attr_gen = (*a)->gen;
		(*a)->attr_path = dir_entry_hash(p, d->names[i]);
	}
	pthread_mutex_unlock(&t->lock);
}

/*
 * Gets action @aid again when its copy is older than ttl. Caller holds
 * the lock; dropped during the request. Serves the cached copy when the
 * server cannot be reached.
 */
static int refresh_action(struct tree *t, uint64_t pid, uint64_t aid)
{
	struct project *p = tree_find_project(t, pid);
	struct action **slot = tree_find_action(p, aid);
	struct action *fresh = NULL;
	struct api_err e = {0};
	char fname[NAMES_FILE_MAX];
	cJSON *item = NULL;
	double asked;
	int rc, deleted = 0;

	if (fresh_enough(t, (*slot)->fetched, tree_now())) {
		t->cache_hits++;
		return 0;
	}
	t->cache_misses++;
	snprintf(fname, sizeof(fname), "%s", (*slot)->fname);
	asked = tree_now();
	pthread_mutex_unlock(&t->lock);

	rc = api_get_action(t->api, pid, aid, &item, &e);
	if (!rc) {
		deleted = is_deleted(item);
		fresh = deleted ? NULL : tree_action_from_json(item);
		if (!deleted && !fresh) {
			rc = -EIO;
			snprintf(e.msg, sizeof(e.msg),
				 "the server's answer is not an action");
		}
		if (fresh)
			fresh->fetched = tree_now();
	}
	cJSON_Delete(item);

	pthread_mutex_lock(&t->lock);
	p = tree_find_project(t, pid);
	slot = p ? tree_find_action(p, aid) : NULL;
	if (!slot) {
		action_free(fresh);
		return -ENOENT;
	}
	if (deleted || rc == -ENOENT) {
		/* Gone on the server: forget it. */
		tree_drop_action(p, aid);
		return -ENOENT;
	}
	if (rc == -EIO) {
		log_notice("%s/%s: serving the cached copy: %s", p->dname,
			   fname, e.msg);
		t->served_stale++;
		(*slot)->fetched = tree_now();
		return 0;
	}
	if (rc) {
		log_error("%s/%s: %s", p->dname, fname, e.msg);
		return rc;
	}
	if ((*slot)->saved > asked) {
		action_free(fresh); /* older than our own save meanwhile */
		return 0;
	}
	tree_put_action(p, fresh);
	return 0;
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

/*
 * How an action file opened to read uses the kernel's caches. Pages are
 * kept while they hold this version read through this name (a grep over
 * a warm tree then costs no read); they are dropped at the open of a new
 * version, unless handles still read an older one through them: then
 * this handle reads past the cache. Attributes the kernel may hold of
 * another version are invalidated (by the caller) before the open ends,
 * so that a stat or a read right after it sees the new size.
 */
static void open_pages(struct tree *t, struct action *a,
		       struct tree_handle *h, struct tree_open_result *out)
{
	uint64_t path = path_hash(h->fname);
	int same = a->page_gen == a->gen && a->page_path == path;

	out->invalidate = t->kernel_notify &&
			  (a->attr_gen != a->gen || a->attr_path != path);
	a->attr_gen = a->gen;
	a->attr_path = path;
	if (a->writers || (a->page_opens && a->page_gen != a->gen)) {
		/* Writers move the size the kernel reads the cache up to. */
		out->direct_io = 1;
		out->keep_cache = 1; /* theirs */
		return;
	}
	/* Nothing is kept with ttl=0. A file changed within the last
	 * second (attr_timeout + 1 without notifications: the kernel may
	 * still hold an old size) is being saved, or just was: read past
	 * the cache, out of reach of the sizes a writer sets. */
	if (t->opts.ttl == 0 ||
	    tree_now() - a->changed <
		    (t->kernel_notify ? 0 : t->attr_timeout) + 1) {
		out->direct_io = 1;
		a->page_gen = KERNEL_NONE;
		return;
	}
	out->keep_cache = same;
	a->page_gen = a->gen;
	a->page_path = path;
	a->page_opens++;
	h->paged = 1;
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
		open_pages(t, a, h, out);
		return 0;
	}
	h->kind = H_ACTION;
	out->direct_io = 1; /* the buffer, not the server's bytes */
	tree_kernel_unknown(a); /* it will hold the sizes written */
	a->writers++;
	h->writer = 1;
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
	if (h->paged || h->kind == H_ACTION) {
		struct action *a = handle_action(h->t, h);

		if (a && h->paged && a->page_opens)
			a->page_opens--;
		if (a && h->writer && a->writers)
			a->writers--;
		if (a && h->kind == H_ACTION) /* the kernel has sizes written */
			tree_kernel_unknown(a);
	}
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
