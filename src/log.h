/*
 * log: the one sink for messages: stderr in the foreground, syslog when
 * daemonized, and a ring of recent notices and errors for .phfs/log.
 *
 * Every line passes through redaction: the API key never leaves here.
 */
#ifndef PHFS_LOG_H
#define PHFS_LOG_H

#include <stddef.h>

enum log_level {
	LOG_ERR_,
	LOG_WARN_,
	LOG_NOTICE_,
	LOG_INFO_,
	LOG_DEBUG_,
};

#define log_error(...) log_msg(LOG_ERR_, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN_, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE_, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO_, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG_, __VA_ARGS__)

void log_init(int debug);
/* From now on lines go to syslog instead of stderr. */
void log_to_syslog(void);
/* Registers the secret to redact; copies it. */
void log_set_secret(const char *secret);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Replaces every occurrence of the secret in @s (in place). */
void log_redact(char *s);

/* The mask shown instead of the key: "phx_...abcd". @out: 32 bytes. */
void log_mask(const char *secret, char *out);

/* A malloc'ed copy of the recent lines, oldest first. */
char *log_ring_text(size_t *len);

#endif
