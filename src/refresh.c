/*
 * refresh: the tree's copies of the server. Builds actions and projects
 * from list answers, installs a listing in place of the last one
 * (keeping the bytes and generation of what did not change), refreshes
 * a listing or an action older than ttl, and prefetches every project's
 * listing in parallel when the root is listed.
 *
 * Called with the tree lock held; each request drops it and takes it
 * again, one refresh of a listing at a time while the others wait.
 */
#include "tree_int.h"
#include "action.h"
#include "listing.h"
#include "log.h"
#include "names.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Generations come from one counter: an action dropped and listed again
 * never meets a gen it had, nor one another struct had. */
static unsigned long new_gen(void)
{
	static unsigned long last;

	return __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED);
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
	a->gen = new_gen();
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
	fresh->page_len = old->page_len;
	fresh->page_drops = old->page_drops;
	fresh->paged_ever = old->paged_ever;
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
		fresh->gen = new_gen();
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
				tree_action_free(arr[w - 1]);
				arr[w - 1] = arr[i];
				continue;
			}
			arr[w++] = arr[i];
		}
		for (size_t i = 0; i < w; i++)
			arr[i]->gen = new_gen();
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
		tree_action_free(p->acts[i]);
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
		tree_action_free(*slot);
		*slot = fresh;
		return;
	}
	grown = realloc(p->acts, (p->nacts + 1) * sizeof(*grown));
	if (!grown) {
		tree_action_free(fresh); /* the next listing brings it */
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
		tree_action_free(*slot);
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
	if (tree_fresh_enough(t, p->listed, now)) {
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
			tree_action_free(fresh[i]);
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
		tree_project_free(t, t->projs[i]);
	free(t->projs);
	t->projs = fresh;
	t->nprojs = n;
	t->projs_listed = tree_now();
}

/* Like refresh_project, for the list of projects. */
int refresh_projects(struct tree *t)
{
	struct api_err e = {0};
	struct project **fresh = NULL;
	cJSON *items = NULL;
	size_t n = 0;
	int rc;

	while (t->projs_refreshing)
		pthread_cond_wait(&t->refreshed, &t->lock);
	if (tree_fresh_enough(t, t->projs_listed, tree_now())) {
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
void refresh_prefetch(struct tree *t)
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
		    !tree_fresh_enough(t, t->projs[i]->listed, now))
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

/*
 * Gets action @aid again when its copy is older than ttl. Caller holds
 * the lock; dropped during the request. Serves the cached copy when the
 * server cannot be reached.
 */
int refresh_action(struct tree *t, uint64_t pid, uint64_t aid)
{
	struct project *p = tree_find_project(t, pid);
	struct action **slot = tree_find_action(p, aid);
	struct action *fresh = NULL;
	struct api_err e = {0};
	char fname[NAMES_FILE_MAX];
	cJSON *item = NULL;
	double asked;
	int rc, deleted = 0;

	if (tree_fresh_enough(t, (*slot)->fetched, tree_now())) {
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
		tree_action_free(fresh);
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
		tree_action_free(fresh); /* older than our own save meanwhile */
		return 0;
	}
	tree_put_action(p, fresh);
	return 0;
}
