/*
 * fuzz: what the fuzz targets share: a check that stops the run with a
 * message (libFuzzer then saves the input), and the text properties the
 * pure modules promise.
 *
 * Never used outside tests/fuzz; never calls into src/.
 */
#ifndef PHFS_FUZZ_H
#define PHFS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops the run with a message: libFuzzer keeps the input. */
#define FUZZ_FAIL(...)                                                         \
	do {                                                                   \
		fprintf(stderr, "\nfuzz check failed at %s:%d: ", __FILE__,    \
			__LINE__);                                             \
		fprintf(stderr, __VA_ARGS__);                                  \
		fputc('\n', stderr);                                           \
		abort();                                                       \
	} while (0)

/* Stops the run when @cond is false. */
#define FUZZ_CHECK(cond, ...)                                                  \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "\nnot true: %s", #cond);              \
			FUZZ_FAIL(__VA_ARGS__);                                \
		}                                                              \
	} while (0)

/* @n bytes of @s on stderr with anything unprintable as \xNN. */
static inline void fuzz_dump(const char *label, const char *s, size_t n)
{
	fprintf(stderr, "  %s (%zu bytes): \"", label, n);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7F && c != '\\' && c != '"')
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
	fprintf(stderr, "\"\n");
}

/*
 * Decodes one strict UTF-8 character (shortest form, no surrogates, at
 * most U+10FFFF). Returns its length, or 0 when @s does not start one.
 */
static inline size_t fuzz_utf8_char(const unsigned char *s, size_t n, long *cp)
{
	size_t len;
	long c;

	if (!n)
		return 0;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		len = 2, c = s[0] & 0x1F;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		len = 3, c = s[0] & 0x0F;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		len = 4, c = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
	    (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF)
		return 0;
	*cp = c;
	return len;
}

static inline int fuzz_utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	long cp;

	for (size_t i = 0; i < n;) {
		size_t len = fuzz_utf8_char(u + i, n - i, &cp);

		if (!len)
			return 0;
		i += len;
	}
	return 1;
}

/*
 * The first control character in @s, valid UTF-8 or not, or -1: C0 but
 * for @allowed (-1 for none), DEL, and with @c1 U+0080..U+009F (0xC2
 * 0x80..0x9F, which no other character contains).
 */
static inline long fuzz_find_control(const char *s, size_t n, int allowed,
				     int c1)
{
	const unsigned char *u = (const unsigned char *)s;

	for (size_t i = 0; i < n; i++) {
		if ((u[i] < 0x20 || u[i] == 0x7F) && u[i] != allowed)
			return u[i];
		if (c1 && u[i] == 0xC2 && i + 1 < n && u[i + 1] >= 0x80 &&
		    u[i + 1] <= 0x9F)
			return u[i + 1];
	}
	return -1;
}

/* FNV-1a: picks ids and buffer sizes from the input, reproducibly. */
static inline uint64_t fuzz_hash(const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 0x100000001b3ULL;
	return h;
}

/* A heap copy of exactly @n bytes, no NUL after: ASan sees a read past. */
static inline char *fuzz_exact(const void *p, size_t n)
{
	char *c = malloc(n ? n : 1);

	if (!c)
		abort();
	memcpy(c, p, n);
	return c;
}

/* A NUL-terminated heap copy; the string ends at the first NUL. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#endif
