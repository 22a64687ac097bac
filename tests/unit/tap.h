/*
 * tap: the few Test Anything Protocol helpers the unit tests share.
 *
 * Each check prints "ok N - what" or "not ok N - what" followed by
 * "# got ..." and "# expected ..." lines; tap_done() prints the plan and
 * a command that shows the failures again, and is the exit status.
 * Header-only so that each test stays one file; never reads the clock or
 * the environment, so a run is the same every time.
 */
#ifndef PHFS_TAP_H
#define PHFS_TAP_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAP_PRINTF(f, a) __attribute__((format(printf, f, a)))

static int tap_count;
static int tap_failures;
static const char *tap_prog = "this test";
/* Fixed seed: a failing generated case fails on every run. */
static uint64_t tap_rng = 0x9E3779B97F4A7C15ULL;

static inline void tap_start(const char *argv0)
{
	tap_prog = argv0;
	setvbuf(stdout, NULL, _IOLBF, 0);
}

/* xorshift64*: deterministic bytes for the generated cases. */
static inline uint64_t tap_rand(void)
{
	tap_rng ^= tap_rng >> 12;
	tap_rng ^= tap_rng << 25;
	tap_rng ^= tap_rng >> 27;
	return tap_rng * 2685821657736338717ULL;
}

/* A uniform-enough integer in [0, n). */
static inline unsigned tap_below(unsigned n)
{
	return (unsigned)(tap_rand() % n);
}

/* Writes @s (@n bytes) as a C string literal, so any byte is visible. */
static inline void tap_fquote(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c >= 0x7F)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static inline void tap_diag(const char *fmt, ...) TAP_PRINTF(1, 2);
static inline void tap_diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
}

/* "# label: "bytes"" on one line. */
static inline void tap_diag_bytes(const char *label, const char *s, size_t n)
{
	printf("# %s: ", label);
	if (s)
		tap_fquote(stdout, s, n);
	else
		fputs("NULL", stdout);
	fputc('\n', stdout);
}

/*
 * Prints the result line. The description is kept on one line and its
 * '#' escaped, so that TAP never reads it as a directive.
 */
static inline int tap_vresult(int pass, const char *fmt, va_list ap)
{
	char desc[512];

	vsnprintf(desc, sizeof(desc), fmt, ap);
	tap_count++;
	if (!pass)
		tap_failures++;
	printf("%s %d - ", pass ? "ok" : "not ok", tap_count);
	for (const char *p = desc; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '#')
			fputs("\\#", stdout);
		else if (c < 0x20 || c == 0x7F)
			printf("\\x%02x", c);
		else
			fputc(c, stdout);
	}
	fputc('\n', stdout);
	return pass;
}

static inline int tap_ok(int pass, const char *fmt, ...) TAP_PRINTF(2, 3);
static inline int tap_ok(int pass, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tap_vresult(pass, fmt, ap);
	va_end(ap);
	return pass;
}

static inline void tap_skip(const char *why, const char *fmt, ...)
    TAP_PRINTF(2, 3);
static inline void tap_skip(const char *why, const char *fmt, ...)
{
	char desc[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	printf("ok %d - %s # SKIP %s\n", ++tap_count, desc, why);
}

/* Byte strings, either may be NULL; the diagnostic shows where they part. */
static inline int tap_is_mem(const char *got, size_t glen, const char *exp,
			     size_t elen, const char *fmt, ...)
    TAP_PRINTF(5, 6);
static inline int tap_is_mem(const char *got, size_t glen, const char *exp,
			     size_t elen, const char *fmt, ...)
{
	int pass;
	va_list ap;

	if (!got || !exp)
		pass = got == exp;
	else
		pass = glen == elen && memcmp(got, exp, glen) == 0;
	va_start(ap, fmt);
	tap_vresult(pass, fmt, ap);
	va_end(ap);
	if (pass)
		return 1;
	if (got && exp && (glen > 400 || elen > 400)) {
		size_t at = 0, from;

		while (at < glen && at < elen && got[at] == exp[at])
			at++;
		from = at > 60 ? at - 60 : 0;
		tap_diag("lengths: got %zu, expected %zu; first difference "
			 "at byte %zu, shown from byte %zu",
			 glen, elen, at, from);
		tap_diag_bytes("got", got + from,
			       glen - from > 160 ? 160 : glen - from);
		tap_diag_bytes("expected", exp + from,
			       elen - from > 160 ? 160 : elen - from);
	} else {
		tap_diag_bytes("got", got, glen);
		tap_diag_bytes("expected", exp, elen);
	}
	return 0;
}

/* C strings, either may be NULL. */
static inline int tap_is_str(const char *got, const char *exp, const char *fmt,
			     ...) TAP_PRINTF(3, 4);
static inline int tap_is_str(const char *got, const char *exp, const char *fmt,
			     ...)
{
	char desc[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(desc, sizeof(desc), fmt, ap);
	va_end(ap);
	return tap_is_mem(got, got ? strlen(got) : 0, exp,
			  exp ? strlen(exp) : 0, "%s", desc);
}

static inline int tap_is_int(long long got, long long exp, const char *fmt, ...)
    TAP_PRINTF(3, 4);
static inline int tap_is_int(long long got, long long exp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tap_vresult(got == exp, fmt, ap);
	va_end(ap);
	if (got != exp)
		tap_diag("got %lld, expected %lld", got, exp);
	return got == exp;
}

static inline int tap_is_u64(uint64_t got, uint64_t exp, const char *fmt, ...)
    TAP_PRINTF(3, 4);
static inline int tap_is_u64(uint64_t got, uint64_t exp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tap_vresult(got == exp, fmt, ap);
	va_end(ap);
	if (got != exp)
		tap_diag("got %llu, expected %llu", (unsigned long long)got,
			 (unsigned long long)exp);
	return got == exp;
}

/*
 * Strict UTF-8: shortest forms only, no surrogates, nothing past
 * U+10FFFF. Returns the offset of the first bad byte, or -1 when valid.
 */
static inline long tap_utf8_bad(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;

	for (size_t i = 0; i < n;) {
		size_t len;
		uint32_t c;

		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if (s[i] >= 0xC2 && s[i] <= 0xDF)
			len = 2;
		else if (s[i] >= 0xE0 && s[i] <= 0xEF)
			len = 3;
		else if (s[i] >= 0xF0 && s[i] <= 0xF4)
			len = 4;
		else
			return (long)i;
		if (i + len > n)
			return (long)i;
		c = s[i] & (0x7F >> len);
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return (long)i;
			c = (c << 6) | (s[i + k] & 0x3F);
		}
		if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
		    (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF)
			return (long)i;
		i += len;
	}
	return -1;
}

/*
 * Offset of the first control character (C0, DEL, or C1 encoded in
 * UTF-8 as C2 80..C2 9F), or -1.
 */
static inline long tap_control_at(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;

	for (size_t i = 0; i < n; i++) {
		if (s[i] < 0x20 || s[i] == 0x7F)
			return (long)i;
		if (s[i] == 0xC2 && i + 1 < n && s[i + 1] >= 0x80 &&
		    s[i + 1] <= 0x9F)
			return (long)i;
	}
	return -1;
}

/* Prints the plan; the result is the process's exit status. */
static inline int tap_done(void)
{
	printf("1..%d\n", tap_count);
	if (tap_failures) {
		tap_diag("%d of %d checks failed; to see them again run: %s",
			 tap_failures, tap_count, tap_prog);
		return 1;
	}
	return 0;
}

#endif
