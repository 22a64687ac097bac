/*
 * fuzz_names: slugs and file names from any bytes (names.h).
 *
 * The input, up to its first NUL, is a server name and a file name at
 * once. Checked: a slug is at most NAMES_SLUG_MAX bytes of valid UTF-8
 * without '/', control characters, a leading '.' or '-', a trailing '-'
 * or "--" (DESIGN.md "The tree"), and slugging it again changes
 * nothing; the names made from an id and a name read back as that id.
 */
#include "names.h"

#include "fuzz.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ID_LIMIT (1ULL << 53)

/* "<1-15 digits, no leading 0>" then '-' or @tail: always an id < 2^53. */
static int short_id_prefix(const char *s, const char *tail)
{
	size_t d = 0;

	if (s[0] < '1' || s[0] > '9')
		return 0;
	while (s[d] >= '0' && s[d] <= '9')
		d++;
	if (d > 15)
		return 0;
	return s[d] == '-' || !strcmp(s + d, tail);
}

/* @s starts with the decimal @id followed by @next or @tail. */
static int starts_with_id(const char *s, uint64_t id, char next,
			  const char *tail)
{
	char dec[24];
	size_t n =
	    (size_t)snprintf(dec, sizeof(dec), "%llu", (unsigned long long)id);

	return !strncmp(s, dec, n) && (s[n] == next || !strcmp(s + n, tail));
}

static void check_slug_text(const char *what, const char *in, const char *slug,
			    size_t len)
{
	long c;

	if (len > NAMES_SLUG_MAX || strlen(slug) != len ||
	    !fuzz_utf8_valid(slug, len) ||
	    (c = fuzz_find_control(slug, len, -1, 1)) >= 0 ||
	    strchr(slug, '/') || slug[0] == '.' || slug[0] == '-' ||
	    (len && slug[len - 1] == '-') || strstr(slug, "--")) {
		fuzz_dump("name", in, strlen(in));
		fuzz_dump(what, slug, strlen(slug));
		FUZZ_FAIL("%s breaks a slug rule (returned length %zu)", what,
			  len);
	}
}

static char *slug_of(const char *name, size_t *len)
{
	char *out = malloc(NAMES_SLUG_MAX + 1); /* exactly: ASan sees past */

	if (!out)
		abort();
	*len = names_slug(name, out);
	return out;
}

static void check_slug(const char *name)
{
	size_t len, len2;
	char *slug = slug_of(name, &len);
	char *again;

	check_slug_text("slug", name, slug, len);
	again = slug_of(slug, &len2);
	if (len2 != len || strcmp(again, slug)) {
		fuzz_dump("name", name, strlen(name));
		fuzz_dump("slug", slug, len);
		fuzz_dump("slug of slug", again, len2);
		FUZZ_FAIL("slug is not idempotent");
	}
	free(again);
	free(slug);
}

static void check_classify(const char *fname)
{
	size_t len = strlen(fname);
	int json = len > 5 && !strcmp(fname + len - 5, ".json");
	int hidden = fname[0] == '.' || fname[0] == '#' || fname[0] == '~';
	uint64_t id = 0;
	enum names_kind k = names_classify(fname, &id);

	FUZZ_CHECK(k == NAMES_SCRATCH || k == NAMES_RECORD ||
		       k == NAMES_RECORD_ID,
		   "unknown kind %d", (int)k);
	FUZZ_CHECK((k == NAMES_SCRATCH) == (hidden || !json),
		   "kind %d for a name that %s a record name", (int)k,
		   hidden || !json ? "is not" : "is");
	if (k == NAMES_RECORD_ID)
		FUZZ_CHECK(id >= 1 && id < ID_LIMIT &&
			       starts_with_id(fname, id, '-', ".json"),
			   "RECORD_ID with id %llu", (unsigned long long)id);
	if (k == NAMES_RECORD)
		FUZZ_CHECK(!short_id_prefix(fname, ".json"),
			   "an id prefix that reads as no id");
}

static void check_parse_dir(const char *dname)
{
	uint64_t id = 0;
	int rc = names_parse_dir(dname, &id);

	FUZZ_CHECK(rc == 0 || rc == -1, "returned %d", rc);
	if (rc == 0)
		FUZZ_CHECK(id >= 1 && id < ID_LIMIT &&
			       starts_with_id(dname, id, '-', ""),
			   "directory id %llu", (unsigned long long)id);
	else
		FUZZ_CHECK(!short_id_prefix(dname, ""),
			   "a directory id prefix that reads as no id");
}

static void check_from_file(const char *fname)
{
	size_t len = strlen(fname);
	size_t stem =
	    len > 5 && !strcmp(fname + len - 5, ".json") ? len - 5 : len;

	for (int strip = 0; strip <= 1; strip++) {
		char *name = names_from_file(fname, strip);
		size_t n;

		FUZZ_CHECK(name, "NULL without a memory shortage");
		n = strlen(name);
		/* What is left is the end of the stem. */
		FUZZ_CHECK(n <= stem && !memcmp(name, fname + stem - n, n),
			   "strip %d: not the end of the stem", strip);
		if (!strip)
			FUZZ_CHECK(n == stem, "kept the id prefix");
		free(name);
	}
}

/* An id from the input: small, large, or either end of the range. */
static uint64_t pick_id(const uint8_t *data, size_t size)
{
	uint64_t h = fuzz_hash(data, size);

	switch (h & 3) {
	case 0:
		return 1;
	case 1:
		return ID_LIMIT - 1;
	case 2:
		return 1 + (h >> 2) % 1000;
	default:
		return 1 + (h >> 2) % (ID_LIMIT - 1);
	}
}

static void check_roundtrip(uint64_t id, const char *name)
{
	char *file = malloc(NAMES_FILE_MAX), *dir = malloc(NAMES_FILE_MAX);
	char *back, dec[24];
	size_t slen;
	char *slug = slug_of(name, &slen);
	uint64_t got = 0;

	if (!file || !dir)
		abort();
	snprintf(dec, sizeof(dec), "%llu", (unsigned long long)id);

	names_action_file(id, name, file);
	FUZZ_CHECK(names_classify(file, &got) == NAMES_RECORD_ID && got == id,
		   "\"%s\" (id %s) classifies as id %llu", file, dec,
		   (unsigned long long)got);
	FUZZ_CHECK(fuzz_utf8_valid(file, strlen(file)) &&
		       fuzz_find_control(file, strlen(file), -1, 1) < 0 &&
		       !strchr(file, '/'),
		   "bad file name \"%s\"", file);
	back = names_from_file(file, 1);
	FUZZ_CHECK(back && !strcmp(back, slen ? slug : dec),
		   "\"%s\" gives the name \"%s\", not \"%s\"", file,
		   back ? back : "(null)", slen ? slug : dec);
	free(back);

	names_project_dir(id, name, dir);
	got = 0;
	FUZZ_CHECK(names_parse_dir(dir, &got) == 0 && got == id,
		   "\"%s\" (id %s) parses as id %llu", dir, dec,
		   (unsigned long long)got);
	FUZZ_CHECK(!strchr(dir, '/') && dir[0] != '.',
		   "bad directory name \"%s\"", dir);

	free(slug);
	free(dir);
	free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	char empty[NAMES_SLUG_MAX + 1];

	FUZZ_CHECK(names_slug(NULL, empty) == 0 && !empty[0],
		   "the slug of NULL is not empty");
	check_slug(s);
	check_classify(s);
	check_parse_dir(s);
	check_from_file(s);
	check_roundtrip(pick_id(data, size), s);
	free(s);
	return 0;
}
