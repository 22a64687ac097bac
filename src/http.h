/*
 * http: one pool of kept-alive connections, run by one I/O thread with a
 * curl multi handle; callers hand in requests and wait for them.
 *
 * Knows no PostHog: URLs in, status and bytes out. Every request has a
 * deadline, so no caller waits longer than it asked to.
 */
#ifndef PHFS_HTTP_H
#define PHFS_HTTP_H

#include <stddef.h>

struct http;

struct http_opts {
	const char *auth_header; /* "Authorization: Bearer ..." */
	const char *cacert;      /* a CA bundle, or NULL for the system's */
	size_t max_body;         /* responses larger than this fail */
	long max_connections;    /* bound on parallel connections */
	int verbose;             /* libcurl's trace, redacted, to the log */
};

struct http_req {
	/* in */
	const char *method; /* "GET", "POST", "PATCH", ... */
	const char *url;
	const char *body; /* JSON, or NULL */
	size_t body_len;
	long timeout_ms;
	/* out */
	long status;     /* 0 when no HTTP answer came */
	int transport;   /* non-zero: the request failed below HTTP */
	int too_big;     /* the answer was larger than max_body */
	int sent;        /* some of the request may have reached the server */
	char error[256]; /* the transport error, when there was one */
	char *resp;      /* malloc'ed, NUL-terminated */
	size_t resp_len;
	long retry_after; /* seconds from Retry-After, or -1 */

	/* private */
	void *priv_easy;
	int priv_done;
	size_t priv_max;
	struct http_req *priv_next;
};

struct http *http_new(const struct http_opts *o);
void http_free(struct http *h);

/*
 * Runs @n requests in parallel and returns when every one has finished
 * (answered, failed, or past its timeout).
 */
void http_perform(struct http *h, struct http_req *reqs, size_t n);

/* Frees the outputs of @r so it can be performed again. */
void http_req_reset(struct http_req *r);

/*
 * Stops the I/O thread, keeping the connections. Call before fork();
 * the next http_perform starts it again.
 */
void http_suspend(struct http *h);

/* libcurl's version string. */
const char *http_curl_version(void);

#endif
