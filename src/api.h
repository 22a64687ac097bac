/*
 * api: the PostHog client. URLs, the auth header, the three list
 * shapes, retries with backoff inside one deadline, and error bodies
 * turned into an errno and a message.
 *
 * Knows no FUSE. Never puts the key anywhere but the request header.
 */
#ifndef PHFS_API_H
#define PHFS_API_H

#include <stddef.h>
#include <stdint.h>
#include <cJSON.h>

struct api;

struct api_opts {
	const char *base_url; /* "https://us.posthog.com", no trailing '/' */
	const char *key;
	const char *cacert;
	double timeout;       /* seconds for one operation, retries included */
	int retries;          /* retries after the first attempt */
	int verbose;
};

/* What went wrong, for the one log line the caller writes. */
struct api_err {
	int err;       /* the errno: EIO, EACCES, ENOENT, EINVAL, ... */
	long status;   /* HTTP status, 0 when the server never answered */
	char msg[384]; /* one line, no secrets */
	int sent;      /* a failed request may have reached the server */
};

struct api_stats {
	unsigned long get, post, patch, put, del, retries, failures;
};

struct api *api_new(const struct api_opts *o);
void api_free(struct api *a);
/* Before fork(): stops the I/O thread (see http_suspend). */
void api_suspend(struct api *a);
void api_stats(struct api *a, struct api_stats *out);

/*
 * Starts one filesystem call on this thread: every request made until
 * the next call shares one deadline, -o timeout from now.
 */
void api_call_begin(struct api *a);

/*
 * Every project the key can see: an array of project objects (caller
 * frees). Follows the DRF pages of /api/projects/.
 */
int api_list_projects(struct api *a, cJSON **out, struct api_err *e);

/* One project by id or "@current". */
int api_get_project(struct api *a, const char *id, cJSON **out,
		    struct api_err *e);

/*
 * Every live action of a project, whatever list shape the server uses:
 * remaining pages are fetched in parallel once the first gives a count.
 */
int api_list_actions(struct api *a, uint64_t project, cJSON **out,
		     struct api_err *e);

int api_get_action(struct api *a, uint64_t project, uint64_t id,
		   cJSON **out, struct api_err *e);

/* The project's actions as the server's CSV (format=csv): malloc'ed. */
int api_get_csv(struct api *a, uint64_t project, char **out, size_t *len,
		struct api_err *e);

/* PATCHes @body; the server's answer in *out. */
int api_patch_action(struct api *a, uint64_t project, uint64_t id,
		     const cJSON *body, cJSON **out, struct api_err *e);

/*
 * POSTs a new action. Never creates two: a POST that may have reached
 * the server is retried only after the name shows it was not created.
 * An action with the name whose id is in @known (the live actions known
 * before) is not ours.
 */
int api_create_action(struct api *a, uint64_t project, const cJSON *body,
		      const uint64_t *known, size_t nknown, cJSON **out,
		      struct api_err *e);

#endif
