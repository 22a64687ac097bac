/*
 * api: the PostHog client (see api.h).
 *
 * Retries GET on network errors, 429 and 5xx with exponential backoff
 * and jitter, honouring Retry-After, all inside the operation's
 * deadline. Never follows a URL the server hands out to another origin:
 * it would carry the key there.
 */
#include "api.h"
#include "http.h"
#include "listing.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Largest response accepted: a list of many thousand actions fits. */
#define API_MAX_BODY (256u << 20)
/* Retry-After is honoured up to this many seconds. */
#define API_MAX_RETRY_AFTER 5.0
/* Pages fetched at once when a list is paginated. */
#define API_PARALLEL_PAGES 8
#define API_MAX_PAGES 100000

struct api {
	struct http *http;
	char *base;
	double timeout;
	int retries;
	pthread_mutex_t lock;
	struct api_stats stats;
	unsigned int seed;
};

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The deadline of the filesystem call this thread is serving, or 0. */
static __thread double call_deadline;

void api_call_begin(struct api *a)
{
	call_deadline = now_mono() + a->timeout;
}

/* When a request made now must be done: -o timeout from now, and never
 * past the deadline of the filesystem call it serves. */
static double op_deadline(struct api *a)
{
	double d = now_mono() + a->timeout;

	return call_deadline > 0 && call_deadline < d ? call_deadline : d;
}

struct api *api_new(const struct api_opts *o)
{
	struct api *a = calloc(1, sizeof(*a));
	struct http_opts ho = {0};
	char *auth = NULL;

	if (!a)
		return NULL;
	if (asprintf(&auth, "Authorization: Bearer %s", o->key) < 0) {
		free(a);
		return NULL;
	}
	ho.auth_header = auth;
	ho.cacert = o->cacert;
	ho.max_body = API_MAX_BODY;
	ho.max_connections = API_PARALLEL_PAGES;
	ho.verbose = o->verbose;
	a->http = http_new(&ho);
	memset(auth, 0, strlen(auth));
	free(auth);
	a->base = strdup(o->base_url);
	a->timeout = o->timeout;
	a->retries = o->retries;
	a->seed = (unsigned int)time(NULL) ^ (unsigned int)getpid();
	pthread_mutex_init(&a->lock, NULL);
	if (!a->http || !a->base) {
		api_free(a);
		return NULL;
	}
	return a;
}

void api_free(struct api *a)
{
	if (!a)
		return;
	http_free(a->http);
	free(a->base);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

void api_suspend(struct api *a)
{
	http_suspend(a->http);
}

void api_stats(struct api *a, struct api_stats *out)
{
	pthread_mutex_lock(&a->lock);
	*out = a->stats;
	pthread_mutex_unlock(&a->lock);
}

static void count_request(struct api *a, const char *method, int retry)
{
	pthread_mutex_lock(&a->lock);
	if (!strcmp(method, "GET"))
		a->stats.get++;
	else if (!strcmp(method, "POST"))
		a->stats.post++;
	else if (!strcmp(method, "PATCH"))
		a->stats.patch++;
	else if (!strcmp(method, "PUT"))
		a->stats.put++;
	else if (!strcmp(method, "DELETE"))
		a->stats.del++;
	if (retry)
		a->stats.retries++;
	pthread_mutex_unlock(&a->lock);
}

static int status_errno(long status)
{
	switch (status) {
	case 400:
	case 413:
		return EINVAL;
	case 401:
	case 403:
		return EACCES;
	case 404:
		return ENOENT;
	default:
		return EIO;
	}
}

static int retryable(const struct http_req *r)
{
	if (r->too_big)
		return 0;
	if (r->transport)
		return 1;
	return r->status == 429 || r->status == 500 || r->status == 502 ||
	       r->status == 503 || r->status == 504;
}

/* Fills @e from a finished request that did not succeed. */
static void describe_failure(struct api *a, const struct http_req *r,
			     const char *path, struct api_err *e)
{
	char reason[300];

	e->status = r->status;
	if (r->transport) {
		e->err = EIO;
		snprintf(e->msg, sizeof(e->msg), "%s %s: cannot reach %s: %s",
			 r->method, path, a->base, r->error);
		return;
	}
	listing_error_reason(r->resp, r->resp_len, r->status, reason,
			     sizeof(reason));
	e->err = status_errno(r->status);
	snprintf(e->msg, sizeof(e->msg), "%s %s: HTTP %ld: %s", r->method,
		 path, r->status, reason);
}

/*
 * The backoff before retry number @attempt (1-based): 200 ms doubling up
 * to 5 s, with +-20 % jitter, or the server's Retry-After when longer.
 */
static double backoff(struct api *a, int attempt, long retry_after)
{
	double d = 0.2;
	double jitter;

	for (int i = 1; i < attempt && d < 5.0; i++)
		d *= 2;
	if (d > 5.0)
		d = 5.0;
	pthread_mutex_lock(&a->lock);
	jitter = 0.8 + 0.4 * (rand_r(&a->seed) / (double)RAND_MAX);
	pthread_mutex_unlock(&a->lock);
	d *= jitter;
	if (retry_after >= 0) {
		double ra = retry_after < API_MAX_RETRY_AFTER
				    ? (double)retry_after
				    : API_MAX_RETRY_AFTER;
		if (ra > d)
			d = ra;
	}
	return d;
}

static void sleep_for(double s)
{
	struct timespec ts;

	if (s <= 0)
		return;
	ts.tv_sec = (time_t)s;
	ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
	nanosleep(&ts, NULL);
}

/*
 * Performs @n requests for @paths in parallel, retrying each that fails
 * transiently, all before @deadline. On success every reqs[i] holds a
 * 2xx answer; returns 0 or a negative errno with @e filled from the
 * first failure, and e->sent set when a failed POST may have arrived.
 */
static int request_many(struct api *a, const char *method, const char *body,
			char **paths, struct http_req *reqs, size_t n,
			double deadline, struct api_err *e)
{
	char **urls = calloc(n, sizeof(*urls));
	struct http_req *batch = calloc(n, sizeof(*batch));
	size_t *index = calloc(n, sizeof(*index));
	size_t ntodo = n;
	int rc = 0;

	if (!urls || !batch || !index) {
		rc = -ENOMEM;
		e->err = ENOMEM;
		snprintf(e->msg, sizeof(e->msg), "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (asprintf(&urls[i], "%s%s", a->base, paths[i]) < 0) {
			rc = -ENOMEM;
			goto out;
		}
		index[i] = i;
	}
	for (int attempt = 0;; attempt++) {
		double left = deadline - now_mono();
		size_t again = 0;
		long retry_after = -1;
		int give_up;

		for (size_t k = 0; k < ntodo; k++) {
			memset(&batch[k], 0, sizeof(batch[k]));
			batch[k].method = method;
			batch[k].url = urls[index[k]];
			batch[k].body = body;
			batch[k].body_len = body ? strlen(body) : 0;
			batch[k].timeout_ms = left > 0.001 ? (long)(left * 1000)
							   : 1;
			count_request(a, method, attempt > 0);
		}
		http_perform(a->http, batch, ntodo);
		for (size_t k = 0; k < ntodo; k++) {
			struct http_req *r = &batch[k];
			int ok = !r->transport && r->status >= 200 &&
				 r->status < 300;

			if (ok) {
				reqs[index[k]] = *r;
				r->resp = NULL;
				continue;
			}
			/* A POST that may have reached the server is not
			 * sent again here: it could create a duplicate. */
			if (retryable(r) &&
			    (strcmp(method, "POST") || !r->sent)) {
				if (r->retry_after > retry_after)
					retry_after = r->retry_after;
				if (again == 0)
					describe_failure(a, r, paths[index[k]],
							 e);
				index[again++] = index[k];
				http_req_reset(r);
				continue;
			}
			describe_failure(a, r, paths[index[k]], e);
			e->sent = r->sent;
			for (size_t j = 0; j < ntodo; j++)
				http_req_reset(&batch[j]);
			rc = -e->err;
			goto out;
		}
		if (!again)
			break;
		{
			double wait = backoff(a, attempt + 1, retry_after);

			give_up = attempt >= a->retries ||
				  now_mono() + wait >= deadline;
		}
		if (give_up) {
			pthread_mutex_lock(&a->lock);
			a->stats.failures++;
			pthread_mutex_unlock(&a->lock);
			rc = -e->err;
			goto out;
		}
		sleep_for(backoff(a, attempt + 1, retry_after));
		ntodo = again;
	}
out:
	if (rc)
		for (size_t i = 0; i < n; i++)
			http_req_reset(&reqs[i]);
	if (urls)
		for (size_t i = 0; i < n; i++)
			free(urls[i]);
	free(urls);
	free(batch);
	free(index);
	return rc;
}

static int get_many(struct api *a, char **paths, struct http_req *reqs,
		    size_t n, double deadline, struct api_err *e)
{
	return request_many(a, "GET", NULL, paths, reqs, n, deadline, e);
}

/* One request whose answer must be a JSON object. */
static int request_json(struct api *a, const char *method, const char *path,
			const char *body, double deadline, cJSON **out,
			struct api_err *e)
{
	struct http_req r = {0};
	char *p = (char *)path;
	char why[128];
	int rc = request_many(a, method, body, &p, &r, 1, deadline, e);

	if (rc)
		return rc;
	*out = listing_parse_json(r.resp, r.resp_len, why, sizeof(why));
	if (!*out) {
		e->err = EIO;
		e->status = r.status;
		snprintf(e->msg, sizeof(e->msg), "%s %s: %s", method, path, why);
		rc = -EIO;
	}
	http_req_reset(&r);
	return rc;
}

static int get_json(struct api *a, const char *path, double deadline,
		    cJSON **out, struct api_err *e)
{
	return request_json(a, "GET", path, NULL, deadline, out, e);
}

int api_get_project(struct api *a, const char *id, cJSON **out,
		    struct api_err *e)
{
	char path[128];
	uint64_t pid;
	int rc;

	snprintf(path, sizeof(path), "/api/projects/%s/", id);
	rc = get_json(a, path, op_deadline(a), out, e);
	if (!rc && (!cJSON_IsObject(*out) || listing_item_id(*out, &pid))) {
		cJSON_Delete(*out);
		*out = NULL;
		e->err = EIO;
		snprintf(e->msg, sizeof(e->msg),
			 "GET %s: the answer is not a project", path);
		rc = -EIO;
	}
	return rc;
}

int api_get_action(struct api *a, uint64_t project, uint64_t id,
		   cJSON **out, struct api_err *e)
{
	char path[128];
	uint64_t got;
	int rc;

	snprintf(path, sizeof(path), "/api/projects/%llu/actions/%llu/",
		 (unsigned long long)project, (unsigned long long)id);
	rc = get_json(a, path, op_deadline(a), out, e);
	if (!rc && (!cJSON_IsObject(*out) || listing_item_id(*out, &got) ||
		    got != id)) {
		cJSON_Delete(*out);
		*out = NULL;
		e->err = EIO;
		snprintf(e->msg, sizeof(e->msg),
			 "GET %s: the answer is not action %llu", path,
			 (unsigned long long)id);
		rc = -EIO;
	}
	return rc;
}

/*
 * The path and query of a "next" link, if it points into this API.
 * Returns a malloc'ed string or NULL.
 */
static char *next_path(struct api *a, const char *next)
{
	size_t blen = strlen(a->base);
	const char *p = next;

	if (!strncmp(next, a->base, blen))
		p = next + blen;
	else if (strstr(next, "://"))
		return NULL; /* another origin: never send the key there */
	if (strncmp(p, "/api/", 5) != 0 || strpbrk(p, " \r\n"))
		return NULL;
	return strdup(p);
}

/* Moves every item of @page's results to the end of @all. */
static void take_results(cJSON *all, struct listing_page *page)
{
	cJSON *it;

	while ((it = cJSON_DetachItemFromArray(page->results, 0)))
		cJSON_AddItemToArray(all, it);
}

/*
 * Lists @path whatever its shape: everything in one answer, count with
 * limit/offset, or DRF pages. With a count, the remaining pages are
 * fetched in parallel; with only "next" links, one after another.
 */
static int list_all(struct api *a, const char *path, double deadline,
		    cJSON **out, struct api_err *e)
{
	struct listing_page page;
	struct http_req first = {0};
	char why[128];
	char *p = (char *)path;
	cJSON *all;
	size_t got, per_page;
	int rc;

	rc = get_many(a, &p, &first, 1, deadline, e);
	if (rc)
		return rc;
	rc = listing_parse(first.resp, first.resp_len, &page, why,
			   sizeof(why));
	http_req_reset(&first);
	if (rc) {
		e->err = EIO;
		snprintf(e->msg, sizeof(e->msg), "GET %s: %s", path, why);
		return -EIO;
	}
	all = cJSON_CreateArray();
	got = (size_t)cJSON_GetArraySize(page.results);
	per_page = got;
	take_results(all, &page);

	if (page.count > (long long)got && per_page > 0) {
		/* The count is known: ask for every other page at once. */
		size_t total = (size_t)page.count;
		size_t npages = (total - got + per_page - 1) / per_page;
		const char *sep = strchr(path, '?') ? "&" : "?";

		if (npages > API_MAX_PAGES) {
			rc = -EIO;
			e->err = EIO;
			snprintf(e->msg, sizeof(e->msg),
				 "GET %s: implausible count %lld", path,
				 page.count);
			goto out;
		}
		for (size_t start = 0; start < npages && !rc;
		     start += API_PARALLEL_PAGES * 4) {
			size_t n = npages - start;
			char **paths;
			struct http_req *reqs;

			if (n > API_PARALLEL_PAGES * 4)
				n = API_PARALLEL_PAGES * 4;
			paths = calloc(n, sizeof(*paths));
			reqs = calloc(n, sizeof(*reqs));
			for (size_t i = 0; paths && reqs && i < n; i++)
				if (asprintf(&paths[i], "%s%slimit=%zu&offset=%zu",
					     path, sep, per_page,
					     got + (start + i) * per_page) < 0)
					paths[i] = NULL;
			rc = paths && reqs ? get_many(a, paths, reqs, n,
						      deadline, e)
					   : -ENOMEM;
			for (size_t i = 0; !rc && i < n; i++) {
				struct listing_page pg;

				if (listing_parse(reqs[i].resp,
						  reqs[i].resp_len, &pg, why,
						  sizeof(why))) {
					e->err = EIO;
					snprintf(e->msg, sizeof(e->msg),
						 "GET %s: %s", paths[i], why);
					rc = -EIO;
					break;
				}
				take_results(all, &pg);
				listing_free(&pg);
			}
			for (size_t i = 0; i < n; i++) {
				if (reqs)
					http_req_reset(&reqs[i]);
				if (paths)
					free(paths[i]);
			}
			free(paths);
			free(reqs);
		}
	} else if (page.has_next) {
		char *next = next_path(a, page.next);
		size_t pages = 0;

		while (next && !rc && pages++ < API_MAX_PAGES) {
			struct listing_page pg;

			rc = get_many(a, &next, &first, 1, deadline, e);
			if (rc)
				break;
			if (listing_parse(first.resp, first.resp_len, &pg, why,
					  sizeof(why))) {
				e->err = EIO;
				snprintf(e->msg, sizeof(e->msg), "GET %s: %s",
					 next, why);
				rc = -EIO;
				http_req_reset(&first);
				break;
			}
			http_req_reset(&first);
			take_results(all, &pg);
			free(next);
			next = pg.has_next ? next_path(a, pg.next) : NULL;
			listing_free(&pg);
		}
		free(next);
	}
out:
	listing_free(&page);
	if (rc) {
		cJSON_Delete(all);
		return rc;
	}
	*out = all;
	return 0;
}

int api_list_projects(struct api *a, cJSON **out, struct api_err *e)
{
	return list_all(a, "/api/projects/", op_deadline(a), out, e);
}

static int list_actions(struct api *a, uint64_t project, double deadline,
			cJSON **out, struct api_err *e)
{
	char path[96];

	snprintf(path, sizeof(path), "/api/projects/%llu/actions/",
		 (unsigned long long)project);
	return list_all(a, path, deadline, out, e);
}

int api_list_actions(struct api *a, uint64_t project, cJSON **out,
		     struct api_err *e)
{
	return list_actions(a, project, op_deadline(a), out, e);
}

/* Checks that @answer is an action; fills @e when it is not. */
static int expect_action(cJSON **answer, const char *path, uint64_t want,
			 struct api_err *e)
{
	uint64_t got;

	if (cJSON_IsObject(*answer) && !listing_item_id(*answer, &got) &&
	    (!want || got == want))
		return 0;
	cJSON_Delete(*answer);
	*answer = NULL;
	e->err = EIO;
	snprintf(e->msg, sizeof(e->msg), "%s: the answer is not an action",
		 path);
	return -EIO;
}

/* @body as the bytes of a request; NULL with @e filled when out of memory. */
static char *body_text(const cJSON *body, struct api_err *e)
{
	char *text = cJSON_PrintUnformatted(body);

	if (!text) {
		e->err = ENOMEM;
		snprintf(e->msg, sizeof(e->msg), "out of memory");
	}
	return text;
}

int api_patch_action(struct api *a, uint64_t project, uint64_t id,
		     const cJSON *body, cJSON **out, struct api_err *e)
{
	char path[128];
	char *text = body_text(body, e);
	int rc;

	if (!text)
		return -ENOMEM;
	snprintf(path, sizeof(path), "/api/projects/%llu/actions/%llu/",
		 (unsigned long long)project, (unsigned long long)id);
	rc = request_json(a, "PATCH", path, text, op_deadline(a), out,
			  e);
	free(text);
	return rc ? rc : expect_action(out, path, id, e);
}

/*
 * Looks for a live action named @name, to learn whether a POST whose
 * answer was lost did create it. Returns 1 and sets *out when found.
 */
static int find_by_name(struct api *a, uint64_t project, const char *name,
			const uint64_t *known, size_t nknown, double deadline,
			cJSON **out)
{
	struct api_err e = {0};
	cJSON *items = NULL, *it;
	int found = 0;

	if (deadline <= now_mono() ||
	    list_actions(a, project, deadline, &items, &e))
		return -1;
	cJSON_ArrayForEach(it, items)
	{
		const char *n = listing_item_name(it);
		uint64_t id = 0;
		int old = 0;

		listing_item_id(it, &id);
		for (size_t i = 0; i < nknown && !old; i++)
			old = known[i] == id;
		if (n && !strcmp(n, name) && !old) {
			*out = cJSON_DetachItemViaPointer(items, it);
			found = 1;
			break;
		}
	}
	cJSON_Delete(items);
	return found;
}

int api_create_action(struct api *a, uint64_t project, const cJSON *body,
		      const uint64_t *known, size_t nknown, cJSON **out,
		      struct api_err *e)
{
	double deadline = op_deadline(a);
	const char *name =
		cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(body, "name"));
	char path[96];
	char *text = body_text(body, e);
	int rc;

	if (!text)
		return -ENOMEM;
	snprintf(path, sizeof(path), "/api/projects/%llu/actions/",
		 (unsigned long long)project);
	for (int attempt = 0;; attempt++) {
		memset(e, 0, sizeof(*e));
		rc = request_json(a, "POST", path, text, deadline, out, e);
		if (!rc || !e->sent || !name || attempt >= a->retries ||
		    (e->status && e->status < 500 && e->status != 429))
			break;
		/* The POST may have arrived. The server keeps live names
		 * unique, so the name tells whether it did. */
		{
			int found = find_by_name(a, project, name, known,
						 nknown, deadline, out);

			if (found == 1) {
				rc = 0;
				break;
			}
			if (found < 0)
				break;
		}
		sleep_for(backoff(a, attempt + 1, -1));
		if (now_mono() >= deadline)
			break;
	}
	free(text);
	return rc ? rc : expect_action(out, path, 0, e);
}

int api_get_csv(struct api *a, uint64_t project, char **out, size_t *len,
		struct api_err *e)
{
	struct http_req r = {0};
	char path[128];
	char *p = path;
	int rc;

	snprintf(path, sizeof(path), "/api/projects/%llu/actions/?format=csv",
		 (unsigned long long)project);
	rc = get_many(a, &p, &r, 1, op_deadline(a), e);
	if (rc)
		return rc;
	*out = r.resp ? r.resp : strdup("");
	*len = r.resp_len;
	r.resp = NULL;
	return *out ? 0 : -ENOMEM;
}
