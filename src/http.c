/*
 * http: the connection pool and its I/O thread (see http.h).
 *
 * One curl multi handle owns every connection, so connections are kept
 * alive across callers and threads. Only the I/O thread touches curl
 * handles; callers queue requests and sleep on a condition variable.
 * Must never block a caller past its request's timeout, and never write
 * the Authorization header to a trace.
 */
#include "http.h"
#include "log.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct http {
	struct http_opts opts;
	char *auth_header;
	char *cacert;
	CURLM *multi;
	struct curl_slist *headers;

	pthread_mutex_t lock;
	pthread_cond_t done_cond;
	pthread_t thread;
	int running; /* the I/O thread is alive */
	int stop;
	struct http_req *queue; /* waiting to be added to the multi */
};

const char *http_curl_version(void)
{
	return curl_version_info(CURLVERSION_NOW)->version;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nmemb;
	char *p;

	if (r->resp_len + n > r->priv_max) {
		r->too_big = 1;
		return 0;
	}
	p = realloc(r->resp, r->resp_len + n + 1);
	if (!p)
		return 0;
	memcpy(p + r->resp_len, data, n);
	r->resp = p;
	r->resp_len += n;
	p[r->resp_len] = '\0';
	return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct http_req *r = arg;
	size_t n = size * nmemb;

	if (n > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
		char tmp[32];
		size_t k = n - 12 < sizeof(tmp) - 1 ? n - 12 : sizeof(tmp) - 1;
		char *end;
		long v;

		memcpy(tmp, data + 12, k);
		tmp[k] = '\0';
		v = strtol(tmp, &end, 10);
		if (end != tmp && v >= 0)
			r->retry_after = v;
	}
	return n;
}

/* libcurl's trace, with the Authorization header cut out. */
static int on_trace(CURL *easy, curl_infotype type, char *data, size_t size,
		    void *arg)
{
	char line[512];
	size_t n;
	char *auth;

	(void)easy;
	(void)arg;
	if (type != CURLINFO_TEXT && type != CURLINFO_HEADER_IN &&
	    type != CURLINFO_HEADER_OUT)
		return 0;
	n = size < sizeof(line) - 1 ? size : sizeof(line) - 1;
	memcpy(line, data, n);
	line[n] = '\0';
	auth = strcasestr(line, "Authorization:");
	if (auth) {
		char *eol = strpbrk(auth, "\r\n");
		const char *rest = eol ? eol : "";

		memmove(auth + 25, rest, strlen(rest) + 1);
		memcpy(auth, "Authorization: [redacted]", 25);
	}
	log_debug("curl %s %s",
		  type == CURLINFO_TEXT       ? "*"
		  : type == CURLINFO_HEADER_IN ? "<"
					       : ">",
		  line);
	return 0;
}

static CURL *easy_for(struct http *h, struct http_req *r)
{
	CURL *e = curl_easy_init();

	if (!e)
		return NULL;
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
			 r->timeout_ms > 0 ? r->timeout_ms : 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
			 r->timeout_ms > 0 && r->timeout_ms < 10000
				 ? r->timeout_ms
				 : 10000L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_USERAGENT, "phfs/" PHFS_VERSION);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h->headers);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->cacert)
		curl_easy_setopt(e, CURLOPT_CAINFO, h->cacert);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->error);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	/* On a kept-alive connection the server closed, libcurl would send
	 * the request again by itself; a POST must never go twice without
	 * the check the caller makes, so it gets a connection of its own. */
	if (!strcmp(r->method, "POST"))
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
	if (r->body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)r->body_len);
	} else if (strcmp(r->method, "GET") != 0) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)0);
	}
	if (h->opts.verbose) {
		curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
		curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_trace);
	}
	return e;
}

static void finish(struct http *h, CURL *e, CURLcode code)
{
	struct http_req *r = NULL;
	curl_off_t pretransfer = 0;

	curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
	if (code != CURLE_OK) {
		r->transport = 1;
		if (!r->error[0])
			snprintf(r->error, sizeof(r->error), "%s",
				 curl_easy_strerror(code));
		if (r->too_big)
			snprintf(r->error, sizeof(r->error),
				 "response larger than %zu bytes",
				 h->opts.max_body);
	}
	/* Before the connection was ready to send, nothing can have reached
	 * the server; from then on, assume it may have. */
	curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
	r->sent = r->status != 0 || pretransfer > 0;
	curl_multi_remove_handle(h->multi, e);
	curl_easy_cleanup(e);
	r->priv_easy = NULL;
	r->priv_done = 1;
}

static void *io_thread(void *arg)
{
	struct http *h = arg;

	pthread_mutex_lock(&h->lock);
	while (!h->stop) {
		struct http_req *q = h->queue;
		int active, left;
		CURLMsg *m;

		h->queue = NULL;
		pthread_mutex_unlock(&h->lock);

		for (struct http_req *r = q, *next; r; r = next) {
			next = r->priv_next;
			r->priv_max = h->opts.max_body;
			r->priv_easy = easy_for(h, r);
			if (!r->priv_easy ||
			    curl_multi_add_handle(h->multi, r->priv_easy)) {
				r->transport = 1;
				snprintf(r->error, sizeof(r->error),
					 "cannot start request");
				if (r->priv_easy)
					curl_easy_cleanup(r->priv_easy);
				pthread_mutex_lock(&h->lock);
				r->priv_done = 1;
				pthread_cond_broadcast(&h->done_cond);
				pthread_mutex_unlock(&h->lock);
			}
		}
		curl_multi_perform(h->multi, &active);
		pthread_mutex_lock(&h->lock);
		while ((m = curl_multi_info_read(h->multi, &left)))
			if (m->msg == CURLMSG_DONE)
				finish(h, m->easy_handle, m->data.result);
		pthread_cond_broadcast(&h->done_cond);
		if (h->stop || h->queue)
			continue;
		pthread_mutex_unlock(&h->lock);
		curl_multi_poll(h->multi, NULL, 0, 1000, NULL);
		pthread_mutex_lock(&h->lock);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

struct http *http_new(const struct http_opts *o)
{
	struct http *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->opts = *o;
	h->auth_header = o->auth_header ? strdup(o->auth_header) : NULL;
	h->cacert = o->cacert ? strdup(o->cacert) : NULL;
	h->opts.auth_header = h->auth_header;
	h->opts.cacert = h->cacert;
	h->multi = curl_multi_init();
	curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
			  o->max_connections > 0 ? o->max_connections : 8L);
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS,
			  o->max_connections > 0 ? o->max_connections : 8L);
	if (h->auth_header)
		h->headers = curl_slist_append(NULL, h->auth_header);
	h->headers = curl_slist_append(h->headers,
				       "Content-Type: application/json");
	h->headers = curl_slist_append(h->headers,
				       "Accept: application/json");
	h->headers = curl_slist_append(h->headers, "Expect:");
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->done_cond, NULL);
	return h;
}

void http_suspend(struct http *h)
{
	pthread_mutex_lock(&h->lock);
	if (!h->running) {
		pthread_mutex_unlock(&h->lock);
		return;
	}
	h->stop = 1;
	pthread_mutex_unlock(&h->lock);
	curl_multi_wakeup(h->multi);
	pthread_join(h->thread, NULL);
	h->running = 0;
	h->stop = 0;
}

void http_free(struct http *h)
{
	if (!h)
		return;
	http_suspend(h);
	curl_multi_cleanup(h->multi);
	curl_slist_free_all(h->headers);
	if (h->auth_header) {
		/* The key leaves memory with the header. */
		memset(h->auth_header, 0, strlen(h->auth_header));
		free(h->auth_header);
	}
	free(h->cacert);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->done_cond);
	free(h);
}

void http_req_reset(struct http_req *r)
{
	free(r->resp);
	r->resp = NULL;
	r->resp_len = 0;
	r->status = 0;
	r->transport = 0;
	r->too_big = 0;
	r->sent = 0;
	r->error[0] = '\0';
	r->retry_after = -1;
	r->priv_done = 0;
	r->priv_easy = NULL;
	r->priv_next = NULL;
}

void http_perform(struct http *h, struct http_req *reqs, size_t n)
{
	pthread_mutex_lock(&h->lock);
	if (!h->running) {
		if (pthread_create(&h->thread, NULL, io_thread, h) != 0) {
			pthread_mutex_unlock(&h->lock);
			for (size_t i = 0; i < n; i++) {
				reqs[i].transport = 1;
				snprintf(reqs[i].error, sizeof(reqs[i].error),
					 "cannot start the I/O thread");
			}
			return;
		}
		h->running = 1;
	}
	for (size_t i = 0; i < n; i++) {
		http_req_reset(&reqs[i]);
		reqs[i].priv_next = h->queue;
		h->queue = &reqs[i];
	}
	pthread_mutex_unlock(&h->lock);
	curl_multi_wakeup(h->multi);

	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < n; i++)
		while (!reqs[i].priv_done)
			pthread_cond_wait(&h->done_cond, &h->lock);
	pthread_mutex_unlock(&h->lock);
}
