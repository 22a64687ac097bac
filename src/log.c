/*
 * log: one sink for every message (see log.h).
 *
 * Must never write the API key anywhere: every line is redacted before
 * it reaches stderr, syslog or the ring.
 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#define RING_LINES 256
#define LINE_MAX_ 1024

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int use_syslog;
static int debug_on;
static char *secret;
static char secret_mask[32];
static char *ring[RING_LINES];
static size_t ring_next;

static const char *level_names[] = {"error", "warning", "notice", "info",
				    "debug"};
static const int level_syslog[] = {LOG_ERR, LOG_WARNING, LOG_NOTICE,
				   LOG_INFO, LOG_DEBUG};

void log_init(int debug)
{
	debug_on = debug;
}

void log_to_syslog(void)
{
	openlog("phfs", LOG_PID, LOG_DAEMON);
	use_syslog = 1;
}

void log_mask(const char *key, char *out)
{
	size_t n = key ? strlen(key) : 0;

	if (n >= 12)
		snprintf(out, 32, "%.4s...%s", key, key + n - 4);
	else
		snprintf(out, 32, "...");
}

void log_set_secret(const char *s)
{
	pthread_mutex_lock(&lock);
	free(secret);
	secret = s && *s ? strdup(s) : NULL;
	log_mask(secret, secret_mask);
	pthread_mutex_unlock(&lock);
}

/* Caller holds the lock. */
static void redact_locked(char *s)
{
	size_t klen, mlen;
	char *p;

	if (!secret)
		return;
	klen = strlen(secret);
	mlen = strlen(secret_mask);
	while ((p = strstr(s, secret))) {
		/* The mask is never longer than the key it replaces. */
		memcpy(p, secret_mask, mlen);
		memmove(p + mlen, p + klen, strlen(p + klen) + 1);
	}
}

void log_redact(char *s)
{
	pthread_mutex_lock(&lock);
	redact_locked(s);
	pthread_mutex_unlock(&lock);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[LINE_MAX_], stamp[32];
	struct tm tm;
	time_t now;
	va_list ap;

	if (level == LOG_DEBUG_ && !debug_on)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	for (char *c = line; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = ' ';

	pthread_mutex_lock(&lock);
	redact_locked(line);
	if (use_syslog)
		syslog(level_syslog[level], "%s", line);
	else
		fprintf(stderr, "phfs: %s: %s\n", level_names[level], line);
	if (level <= LOG_NOTICE_) {
		now = time(NULL);
		gmtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
		free(ring[ring_next]);
		if (asprintf(&ring[ring_next], "%s %s %s\n", stamp,
			     level_names[level], line) < 0)
			ring[ring_next] = NULL;
		ring_next = (ring_next + 1) % RING_LINES;
	}
	pthread_mutex_unlock(&lock);
}

char *log_ring_text(size_t *len)
{
	size_t total = 0, at = 0;
	char *out;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < RING_LINES; i++)
		if (ring[i])
			total += strlen(ring[i]);
	out = malloc(total + 1);
	if (out) {
		for (size_t i = 0; i < RING_LINES; i++) {
			const char *l = ring[(ring_next + i) % RING_LINES];
			size_t n;

			if (!l)
				continue;
			n = strlen(l);
			memcpy(out + at, l, n);
			at += n;
		}
		out[at] = '\0';
		*len = at;
	}
	pthread_mutex_unlock(&lock);
	return out;
}
