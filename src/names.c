/*
 * names: slugs and the meaning of file names (see names.h).
 *
 * Pure. Must never produce a name with '/', NUL, a control character, or
 * a leading '.' or '-', whatever bytes the server sends.
 */
#include "names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"

/*
 * Decodes one UTF-8 character at @s (@n bytes left). Returns its length
 * and sets *cp, or returns 1 and sets *cp = -1 for a byte that does not
 * start a valid, shortest-form character.
 */
static size_t utf8_decode(const unsigned char *s, size_t n, long *cp)
{
	size_t len;
	long c;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		len = 2;
		c = s[0] & 0x1F;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		len = 3;
		c = s[0] & 0x0F;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		len = 4;
		c = s[0] & 0x07;
	} else {
		*cp = -1;
		return 1;
	}
	if (len > n) {
		*cp = -1;
		return 1;
	}
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			*cp = -1;
			return 1;
		}
		c = (c << 6) | (s[i] & 0x3F);
	}
	if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
	    (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) {
		*cp = -1;
		return 1;
	}
	*cp = c;
	return len;
}

/* Non-ASCII letters, marks and digits are kept; anything else is a
 * separator, as in ASCII. */
static int in_ranges(const unsigned int (*r)[2], size_t n, long c)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (c < (long)r[mid][0])
			hi = mid;
		else if (c > (long)r[mid][1])
			lo = mid + 1;
		else
			return 1;
	}
	return 0;
}

#define IN_TABLE(t, c) in_ranges(t, sizeof(t) / sizeof(t[0]), c)

/* Lower case, where it keeps the UTF-8 length. */
static long lower_cp(long c)
{
	size_t lo = 0, hi = sizeof(unicode_lower) / sizeof(unicode_lower[0]);

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const int *r = unicode_lower[mid];

		if (c < r[0])
			hi = mid;
		else if (c > r[1])
			lo = mid + 1;
		else
			return (c - r[0]) % r[3] == 0 ? c + r[2] : c;
	}
	return c;
}

/* Writes @c as UTF-8 of exactly @len bytes. */
static void utf8_encode(long c, size_t len, char *out)
{
	if (len == 2) {
		out[0] = (char)(0xC0 | (c >> 6));
		out[1] = (char)(0x80 | (c & 0x3F));
	} else if (len == 3) {
		out[0] = (char)(0xE0 | (c >> 12));
		out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
		out[2] = (char)(0x80 | (c & 0x3F));
	} else if (len == 4) {
		out[0] = (char)(0xF0 | (c >> 18));
		out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
		out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
		out[3] = (char)(0x80 | (c & 0x3F));
	}
}

size_t names_slug(const char *name, char *out)
{
	const unsigned char *s = (const unsigned char *)name;
	size_t n = name ? strlen(name) : 0;
	size_t len = 0;
	int dash = 0, prev_kept = 0;

	for (size_t i = 0; i < n;) {
		long cp;
		size_t clen = utf8_decode(s + i, n - i, &cp);
		int keep;

		if (cp < 0)
			keep = 0;
		else if (cp < 0x80)
			keep = (cp >= 'a' && cp <= 'z') ||
			       (cp >= 'A' && cp <= 'Z') ||
			       (cp >= '0' && cp <= '9');
		else if (IN_TABLE(unicode_mark, cp))
			keep = prev_kept; /* a mark on a separator goes too */
		else
			keep = IN_TABLE(unicode_word, cp);
		prev_kept = keep;

		if (!keep) {
			dash = len > 0;
			i += clen;
			continue;
		}
		if (len + (size_t)dash + clen > NAMES_SLUG_MAX)
			break;
		if (dash)
			out[len++] = '-';
		dash = 0;
		if (cp < 0x80) {
			out[len++] = (char)((cp >= 'A' && cp <= 'Z') ? cp + 32
								     : cp);
		} else if (lower_cp(cp) != cp) {
			utf8_encode(lower_cp(cp), clen, out + len);
			len += clen;
		} else {
			memcpy(out + len, s + i, clen);
			len += clen;
		}
		i += clen;
	}
	out[len] = '\0';
	return len;
}

void names_action_file(uint64_t id, const char *name, char *out)
{
	char slug[NAMES_SLUG_MAX + 1];

	if (names_slug(name, slug))
		snprintf(out, NAMES_FILE_MAX, "%llu-%s.json",
			 (unsigned long long)id, slug);
	else
		snprintf(out, NAMES_FILE_MAX, "%llu.json",
			 (unsigned long long)id);
}

void names_project_dir(uint64_t id, const char *name, char *out)
{
	char slug[NAMES_SLUG_MAX + 1];

	if (names_slug(name, slug))
		snprintf(out, NAMES_FILE_MAX, "%llu-%s",
			 (unsigned long long)id, slug);
	else
		snprintf(out, NAMES_FILE_MAX, "%llu", (unsigned long long)id);
}

/*
 * Parses the decimal id at the start of @s: no leading zero, at most
 * 2^53 (ids travel as JSON numbers). Returns the number of digits, or 0.
 */
static size_t parse_id(const char *s, uint64_t *id)
{
	uint64_t v = 0;
	size_t i = 0;

	if (s[0] < '1' || s[0] > '9')
		return 0;
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		if (i >= 16)
			return 0;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v >= (1ULL << 53))
		return 0;
	*id = v;
	return i;
}

static int ends_with_json(const char *s, size_t len)
{
	return len > 5 && memcmp(s + len - 5, ".json", 5) == 0;
}

enum names_kind names_classify(const char *fname, uint64_t *id)
{
	size_t len = strlen(fname);
	size_t digits;

	if (fname[0] == '.' || fname[0] == '#' || fname[0] == '~' ||
	    !ends_with_json(fname, len))
		return NAMES_SCRATCH;
	digits = parse_id(fname, id);
	if (digits && (fname[digits] == '-' || digits == len - 5))
		return NAMES_RECORD_ID;
	return NAMES_RECORD;
}

int names_parse_dir(const char *dname, uint64_t *id)
{
	size_t digits = parse_id(dname, id);

	if (digits && (dname[digits] == '\0' || dname[digits] == '-'))
		return 0;
	return -1;
}

char *names_from_file(const char *fname, int strip_id_prefix)
{
	size_t len = strlen(fname);
	uint64_t id;

	if (ends_with_json(fname, len))
		len -= 5;
	if (strip_id_prefix) {
		size_t digits = parse_id(fname, &id);

		if (digits && digits + 1 < len && fname[digits] == '-') {
			fname += digits + 1;
			len -= digits + 1;
		}
	}
	return strndup(fname, len);
}
