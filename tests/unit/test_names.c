/*
 * Unit tests of names.c: slugs, file and directory names, and how a file
 * name in a project directory is classified.
 *
 * The slug rules are DESIGN.md's "The tree"; the scratch names are the
 * ones editors and tools create (editor-saves.md).
 */
#include "names.h"

#include "tap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void slug_is(const char *name, const char *expected, const char *why)
{
	char out[NAMES_SLUG_MAX + 1];
	size_t len;

	memset(out, 'X', sizeof(out));
	len = names_slug(name, out);
	if (tap_is_str(out, expected, "slug: %s", why))
		tap_is_int((long long)len, (long long)strlen(expected),
			   "slug: %s: returns its length", why);
}

static void test_slug_examples(void)
{
	slug_is("Signed up", "signed-up", "DESIGN example \"Signed up\"");
	slug_is("Clicked 'Buy' button!", "clicked-buy-button",
		"DESIGN example \"Clicked 'Buy' button!\"");
	slug_is("Регистрация", "регистрация",
		"DESIGN example \"Регистрация\" is регистрация");
	slug_is("My Web App", "my-web-app", "spaces become '-'");
	slug_is("ABC xyz 123", "abc-xyz-123", "ASCII lowercased, digits kept");
	slug_is("a  -- b", "a-b", "a run of separators is one '-'");
	slug_is("v1.2.3", "v1-2-3", "'.' inside a name becomes '-'");
	slug_is("Café Crème", "café-crème", "accented letters kept");
	slug_is("ÉCOLE", "école",
		"non-ASCII capitals lowercased, as in DESIGN's example");
	slug_is("ΑΘΗΝΑ", "αθηνα", "Greek capitals lowercased");
	slug_is("登録 ボタン", "登録-ボタン", "CJK kept, space becomes '-'");
	slug_is("登録\xe3\x80\x80ボタン", "登録-ボタン",
		"the ideographic space U+3000 is a separator");
	slug_is("a\xc2\xa0z", "a-z", "no-break space U+00A0 is a separator");
	slug_is("a\xe2\x80\x8bz", "a-z",
		"zero-width space U+200B is a separator");
	slug_is("a\xe2\x80\xa8z", "a-z",
		"line separator U+2028 is a separator");
	slug_is("a\xef\xbf\xbdz", "a-z",
		"replacement character U+FFFD is a separator");
}

static void test_slug_empty(void)
{
	char out[NAMES_SLUG_MAX + 1];

	memset(out, 'X', sizeof(out));
	tap_is_int((long long)names_slug(NULL, out), 0,
		   "slug: NULL name gives length 0");
	tap_is_str(out, "", "slug: NULL name gives \"\"");
	slug_is("", "", "empty name");
	slug_is("!!!", "", "punctuation only");
	slug_is(" \t ", "", "white space only");
	slug_is("...", "", "dots only");
	slug_is("---", "", "dashes only");
	slug_is("\xe2\x9c\xa8\xf0\x9f\x8e\x89", "", "emoji only");
	slug_is("\xff\xfe\xc0", "", "invalid UTF-8 only");
}

static void test_slug_hostile(void)
{
	slug_is("/", "", "'/' alone");
	slug_is("a/b", "a-b", "'/' becomes '-'");
	slug_is("../../etc/passwd", "etc-passwd", "a path climbing up");
	slug_is("..", "", "'..'");
	slug_is(".", "", "'.'");
	slug_is(".hidden", "hidden", "no leading '.'");
	slug_is("name.", "name", "no trailing '.'");
	slug_is("-dash", "dash", "no leading '-'");
	slug_is("dash-", "dash", "no trailing '-'");
	slug_is("--a--", "a", "dashes trimmed at both ends");
	slug_is(".-.a.-.", "a", "dots and dashes trimmed at both ends");
	slug_is("a\\b", "a-b", "backslash becomes '-'");
	slug_is("line1\nline2", "line1-line2", "newline becomes '-'");
	slug_is("\r\ncrlf\r\n", "crlf", "CR LF trimmed");
	slug_is("tab\there", "tab-here", "tab becomes '-'");
	slug_is("a\x01\x02\x1f\x7fz", "a-z", "C0 controls and DEL");
	slug_is("a\xc2\x85z\xc2\x9bq", "a-z-q",
		"C1 controls U+0085 and U+009B");
	slug_is("\x1b[31mred", "31mred", "an escape sequence");
	slug_is("a\xe2\x80\xaez", "a-z", "right-to-left override U+202E");
	slug_is("a\xef\xbb\xbfz", "a-z", "byte order mark U+FEFF");
}

static void test_slug_bad_utf8(void)
{
	slug_is("caf\xe9", "caf", "Latin-1 byte at the end");
	slug_is("caf\xe9 ok", "caf-ok", "Latin-1 byte inside");
	slug_is("a\xffz", "a-z", "0xFF byte");
	slug_is("a\x80z", "a-z", "stray continuation byte");
	slug_is("a\xc3", "a", "sequence cut by the end");
	slug_is("a\xc3z", "a-z", "sequence cut by an ASCII byte");
	slug_is("a\xe2\x82z", "a-z", "3-byte sequence cut short");
	slug_is("a\xc0\xafz", "a-z", "overlong '/' (C0 AF)");
	slug_is("a\xc1\x81z", "a-z", "overlong 'A' (C1 81) is not kept");
	slug_is("a\xe0\x80\xafz", "a-z", "3-byte overlong '/'");
	slug_is("a\xf0\x80\x80\xafz", "a-z", "4-byte overlong '/'");
	slug_is("a\xe0\x9f\xbfz", "a-z", "3-byte overlong U+07FF");
	slug_is("a\xed\xa0\x80z", "a-z", "UTF-8 encoded surrogate D800");
	slug_is("a\xed\xbf\xbfz", "a-z", "UTF-8 encoded surrogate DFFF");
	slug_is("\xed\xa0\xbd\xed\xb8\x80", "",
		"a surrogate pair encoded as two 3-byte sequences (CESU-8)");
	slug_is("a\xf4\x90\x80\x80z", "a-z", "beyond U+10FFFF");
	slug_is("a\xf8\x88\x80\x80\x80z", "a-z", "5-byte form");
	slug_is("\xc3\xa9\xc3", "é", "valid character kept before a cut one");
}

static void test_slug_emoji(void)
{
	slug_is("\xf0\x9f\x8e\x89 Launch \xf0\x9f\x9a\x80", "launch",
		"emoji around a word");
	slug_is("I \xe2\x9d\xa4\xef\xb8\x8f NY", "i-ny",
		"heart with variation selector between words");
	slug_is("a\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d"
		"\xf0\x9f\x91\xa7z",
		"a-z", "ZWJ family sequence");
	slug_is("ok\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", "ok",
		"thumbs up with skin tone");
	slug_is("\xf0\x9f\x87\xab\xf0\x9f\x87\xb7 France", "france",
		"regional indicator flag");
}

/*
 * DESIGN.md: only letters (and digits) stay; "every run of other
 * characters (spaces, punctuation, ...)" becomes one '-'.
 */
static void test_slug_other_scripts_punctuation(void)
{
	static const struct {
		const char *in, *what;
	} cases[] = {
	    {"a\xe1\x9a\x80z", "Ogham space mark U+1680 (a space)"},
	    {"a\xcd\xbez", "Greek question mark U+037E"},
	    {"a\xd8\x8cz", "Arabic comma U+060C"},
	    {"a\xe0\xa5\xa4z", "Devanagari danda U+0964"},
	    {"a\xd6\x89z", "Armenian full stop U+0589"},
	    {"a\xe2\x84\xa2z", "trade mark sign U+2122 (a symbol)"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		slug_is(cases[i].in, "a-z", cases[i].what);
}

/* Checks the length and UTF-8 of a cut slug and that it is a prefix. */
static void cut_is(const char *name, const char *expected, const char *why)
{
	char out[NAMES_SLUG_MAX + 1];
	size_t len = names_slug(name, out);

	tap_ok(len <= NAMES_SLUG_MAX && strlen(out) == len,
	       "cut: %s: at most %d bytes (got %zu)", why, NAMES_SLUG_MAX, len);
	tap_ok(tap_utf8_bad(out, len) < 0, "cut: %s: valid UTF-8", why);
	tap_is_str(out, expected, "cut: %s: the expected prefix", why);
}

static char *repeat(const char *prefix, const char *unit, int times)
{
	size_t plen = strlen(prefix), ulen = strlen(unit);
	char *s = malloc(plen + ulen * (size_t)times + 1);

	if (!s)
		abort();
	memcpy(s, prefix, plen);
	for (int i = 0; i < times; i++)
		memcpy(s + plen + ulen * (size_t)i, unit, ulen);
	s[plen + ulen * (size_t)times] = '\0';
	return s;
}

static void test_slug_cut(void)
{
	static const struct {
		const char *prefix, *unit, *exp_prefix, *exp_unit;
		int exp_times;
		const char *what;
	} cases[] = {
	    {"", "a", "", "a", 64, "300 ASCII letters"},
	    {"", "\xc3\xa9", "", "\xc3\xa9", 32, "300 two-byte letters"},
	    {"", "\xc3\x89", "", "\xc3\xa9", 32, "300 two-byte capitals"},
	    {"a", "\xc3\xa9", "a", "\xc3\xa9", 31,
	     "odd offset then two-byte letters"},
	    {"", "\xe7\x99\xbb", "", "\xe7\x99\xbb", 21,
	     "300 three-byte letters"},
	    {"ab", "\xe7\x99\xbb", "ab", "\xe7\x99\xbb", 20,
	     "two bytes then three-byte letters"},
	    {"", "\xf0\x9d\x92\x9c", "", "\xf0\x9d\x92\x9c", 16,
	     "300 four-byte letters (U+1D49C)"},
	    {"x", "\xf0\x9d\x92\x9c", "x", "\xf0\x9d\x92\x9c", 15,
	     "one byte then four-byte letters"},
	    {"", "\xd1\x8f ", "\xd1\x8f", "-\xd1\x8f", 20,
	     "two-byte words and spaces"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *in = repeat(cases[i].prefix, cases[i].unit, 300);
		char *exp = repeat(cases[i].exp_prefix, cases[i].exp_unit,
				   cases[i].exp_times);

		cut_is(in, exp, cases[i].what);
		free(in);
		free(exp);
	}

	/* A separator run at the cut must not leave a trailing '-'. */
	char *words = repeat("", "abc! ", 60);
	char out[NAMES_SLUG_MAX + 1];
	size_t len = names_slug(words, out);

	tap_ok(len > 0 && len <= NAMES_SLUG_MAX && out[len - 1] != '-',
	       "cut: words and punctuation: no trailing '-' (got %zu bytes)",
	       len);
	free(words);
}

/* Bytes for the property loop: mostly the troublesome ones. */
static size_t random_name(char *buf, size_t cap)
{
	static const char *const pieces[] = {
	    "/",
	    "..",
	    ".",
	    "-",
	    " ",
	    "\n",
	    "\t",
	    "\x7f",
	    "\x01",
	    "\x1f",
	    "A",
	    "z",
	    "0",
	    "\\",
	    "\xc3\xa9",
	    "\xd0\xaf",
	    "\xe7\x99\xbb",
	    "\xf0\x9f\x8e\x89",
	    "\xf0\x9d\x92\x9c",
	    "\xc2\x85",
	    "\xc2\xa0",
	    "\xe2\x80\x8b",
	    "\xef\xbb\xbf",
	    "\xed\xa0\x80",
	    "\xc0\xaf",
	    "\xe0\x80\xaf",
	    "\xf4\x90\x80\x80",
	    "\xc3",
	    "\xe2\x82",
	    "\xff",
	    "\x80",
	    "\xcc\x81",
	};
	size_t n = tap_below(300), len = 0;

	while (len < n && len + 8 < cap) {
		unsigned r = tap_below(4);

		if (r == 0) {
			/* Any byte but NUL. */
			buf[len++] = (char)(1 + tap_below(255));
		} else {
			const char *p = pieces[tap_below(sizeof(pieces) /
							 sizeof(pieces[0]))];
			size_t plen = strlen(p);

			memcpy(buf + len, p, plen);
			len += plen;
		}
	}
	buf[len] = '\0';
	return len;
}

/* Returns NULL when @slug (@len bytes) keeps every promise, else why. */
static const char *slug_broken(const char *slug, size_t len)
{
	if (len > NAMES_SLUG_MAX)
		return "longer than NAMES_SLUG_MAX";
	if (strlen(slug) != len)
		return "returned length differs from strlen";
	if (tap_utf8_bad(slug, len) >= 0)
		return "not valid UTF-8";
	if (tap_control_at(slug, len) >= 0)
		return "has a control character";
	if (strchr(slug, '/'))
		return "has a '/'";
	if (len && (slug[0] == '-' || slug[0] == '.'))
		return "starts with '-' or '.'";
	if (len && (slug[len - 1] == '-' || slug[len - 1] == '.'))
		return "ends with '-' or '.'";
	if (strstr(slug, "--"))
		return "has a run of '-'";
	for (size_t i = 0; i < len; i++) {
		char c = slug[i];

		if ((unsigned char)c < 0x80 && c != '-' &&
		    !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9'))
			return "has an ASCII byte other than [a-z0-9-]";
	}
	return NULL;
}

static void test_slug_property(void)
{
	enum { ROUNDS = 20000 };
	char name[1024], slug[NAMES_SLUG_MAX + 1], again[NAMES_SLUG_MAX + 1];
	char file[NAMES_FILE_MAX], dir[NAMES_FILE_MAX];
	const char *broken = NULL;
	int round;

	for (round = 0; round < ROUNDS && !broken; round++) {
		size_t nlen = random_name(name, sizeof(name));
		size_t len = names_slug(name, slug);
		uint64_t id = 1 + (tap_rand() % ((1ULL << 53) - 1)), back = 0;

		broken = slug_broken(slug, len);
		if (!broken) {
			names_slug(slug, again);
			if (strcmp(slug, again) != 0)
				broken = "slug of the slug differs";
		}
		if (!broken) {
			names_action_file(id, name, file);
			if (strchr(file, '/') ||
			    names_classify(file, &back) != NAMES_RECORD_ID ||
			    back != id)
				broken = "action file name does not classify "
					 "back to its id";
		}
		if (!broken) {
			names_project_dir(id, name, dir);
			back = 0;
			if (strchr(dir, '/') || names_parse_dir(dir, &back) ||
			    back != id)
				broken = "project directory name does not "
					 "parse back to its id";
		}
		if (broken) {
			tap_diag("round %d: %s", round, broken);
			tap_diag_bytes("name", name, nlen);
			tap_diag_bytes("slug", slug, strlen(slug));
		}
	}
	tap_ok(!broken, "slug property: %d generated names keep every rule",
	       round);
}

static void test_action_file(void)
{
	char out[NAMES_FILE_MAX];
	char *a300 = repeat("", "a", 300), *exp;

	names_action_file(42, "Signed up", out);
	tap_is_str(out, "42-signed-up.json", "action file: 42, \"Signed up\"");
	names_action_file(57, "Clicked 'Buy' button!", out);
	tap_is_str(out, "57-clicked-buy-button.json",
		   "action file: 57, \"Clicked 'Buy' button!\"");
	names_action_file(42, NULL, out);
	tap_is_str(out, "42.json", "action file: null name is <id>.json");
	names_action_file(42, "", out);
	tap_is_str(out, "42.json", "action file: empty name is <id>.json");
	names_action_file(42, "?!", out);
	tap_is_str(out, "42.json",
		   "action file: punctuation-only name is <id>.json");
	names_action_file(7, "../..", out);
	tap_is_str(out, "7.json", "action file: \"../..\" is <id>.json");

	names_action_file(UINT64_MAX, a300, out);
	exp = repeat("18446744073709551615-", "a", 64);
	exp = realloc(exp, strlen(exp) + 6);
	if (!exp)
		abort();
	strcat(exp, ".json");
	tap_is_str(out, exp,
		   "action file: the largest id and a 64-byte slug fit");

	names_project_dir(12345, "My Web App", out);
	tap_is_str(out, "12345-my-web-app", "project dir: 12345, My Web App");
	names_project_dir(67890, NULL, out);
	tap_is_str(out, "67890", "project dir: null name is <id>");
	names_project_dir(67890, "...", out);
	tap_is_str(out, "67890", "project dir: dots-only name is <id>");
	names_project_dir(1, "регистрация", out);
	tap_is_str(out, "1-регистрация", "project dir: Cyrillic name");
	names_project_dir(UINT64_MAX, a300, out);
	exp[strlen(exp) - 5] = '\0';
	tap_is_str(out, exp, "project dir: the largest id and a 64-byte slug");
	free(exp);
	free(a300);
}

static void classify_is(const char *fname, enum names_kind kind, uint64_t id,
			const char *why)
{
	static const char *const kinds[] = {"SCRATCH", "RECORD", "RECORD_ID"};
	uint64_t got_id = 0;
	enum names_kind got = names_classify(fname, &got_id);
	int pass = got == kind && (kind != NAMES_RECORD_ID || got_id == id);

	tap_ok(pass, "classify '%s' (%s): %s", fname, why, kinds[kind]);
	if (!pass) {
		if (got == NAMES_RECORD_ID)
			tap_diag("got RECORD_ID with id %llu",
				 (unsigned long long)got_id);
		else
			tap_diag("got %s",
				 (unsigned)got < 3 ? kinds[got] : "?");
		if (kind == NAMES_RECORD_ID)
			tap_diag("expected RECORD_ID with id %llu",
				 (unsigned long long)id);
	}
}

static void test_classify(void)
{
	static const struct {
		const char *name, *tool;
	} scratch[] = {
	    {".x.json.swp", "vim swap"},
	    {".42-signed-up.json.swp", "vim swap of a record"},
	    {".42-signed-up.json.swx", "vim swap probe"},
	    {"4913", "vim write probe"},
	    {"5036", "vim's next write probe"},
	    {"x.json~", "vim/emacs backup"},
	    {"42-signed-up.json~", "backup of a record"},
	    {"#x.json#", "emacs auto-save"},
	    {"#42-signed-up.json#", "emacs auto-save of a record"},
	    {".#x.json", "emacs lock"},
	    {".#42-signed-up.json", "emacs lock of a record"},
	    {"sedAbC123", "sed -i"},
	    {"PpX3kq9Z", "perl -i"},
	    {".x.json.AbC123", "rsync"},
	    {".42-signed-up.json.AbC123", "rsync temp of a record"},
	    {".tmp-123.json", "python mkstemp, ends in .json"},
	    {"x.json.tmp", "jq > tmp && mv"},
	    {"x.bak", "a backup"},
	    {"42-signed-up.json.bak", "a backup of a record"},
	    {"42-signed-up.json.vsctmp", "VS Code atomic save"},
	    {"42-signed-up.json.rejected", "a rejected update"},
	    {".fuse_hidden0001", "libfuse hidden file"},
	    {".json", "\".json\" alone"},
	    {"~x.json", "leading '~'"},
	    {"", "empty name"},
	    {"json", "no dot"},
	    {"x.jso", "not .json"},
	};

	for (size_t i = 0; i < sizeof(scratch) / sizeof(scratch[0]); i++)
		classify_is(scratch[i].name, NAMES_SCRATCH, 0, scratch[i].tool);

	classify_is("42.json", NAMES_RECORD_ID, 42, "id alone");
	classify_is("42-signed-up.json", NAMES_RECORD_ID, 42, "id and slug");
	classify_is("42-old-name.json", NAMES_RECORD_ID, 42, "an old name");
	classify_is("42-.json", NAMES_RECORD_ID, 42, "id and a bare '-'");
	classify_is("1.json", NAMES_RECORD_ID, 1, "smallest id");
	classify_is("9007199254740991.json", NAMES_RECORD_ID,
		    9007199254740991ULL, "2^53-1");
	classify_is("12345678-x.y.json", NAMES_RECORD_ID, 12345678,
		    "dots in the suffix");

	classify_is("signed-up.json", NAMES_RECORD, 0, "a new name");
	classify_is("Signed Up.json", NAMES_RECORD, 0, "a new name, spaces");
	classify_is("007-x.json", NAMES_RECORD, 0, "leading zero: not an id");
	classify_is("0.json", NAMES_RECORD, 0, "zero is not an id");
	classify_is("0-x.json", NAMES_RECORD, 0, "zero prefix");
	classify_is("42x.json", NAMES_RECORD, 0, "digits then a letter");
	classify_is("42.json.json", NAMES_RECORD, 0, "digits then .json twice");
	classify_is("-42.json", NAMES_RECORD, 0, "a minus sign");
	classify_is("99999999999999999.json", NAMES_RECORD, 0,
		    "17 digits: more than 2^53");
	classify_is("18446744073709551616.json", NAMES_RECORD, 0,
		    "2^64: would wrap");
	classify_is("123456789012345678901234567890-x.json", NAMES_RECORD, 0,
		    "a huge digit string");
	classify_is("9007199254740993.json", NAMES_RECORD, 0,
		    "2^53+1: not exact as a JSON number");
}

static void test_parse_dir(void)
{
	static const struct {
		const char *name;
		int rc;
		uint64_t id;
	} cases[] = {
	    {"12345", 0, 12345},
	    {"12345-my-web-app", 0, 12345},
	    {"12345-", 0, 12345},
	    {"1-регистрация", 0, 1},
	    {"9007199254740991", 0, 9007199254740991ULL},
	    {"", -1, 0},
	    {".phfs", -1, 0},
	    {"0", -1, 0},
	    {"012", -1, 0},
	    {"my-web-app", -1, 0},
	    {"12a", -1, 0},
	    {"12.json", -1, 0},
	    {"-12", -1, 0},
	    {"99999999999999999", -1, 0},
	    {"18446744073709551616", -1, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t id = 0;
		int rc = names_parse_dir(cases[i].name, &id);

		if (tap_is_int(rc, cases[i].rc, "parse dir '%s': %s",
			       cases[i].name, cases[i].rc ? "-1" : "0") &&
		    rc == 0)
			tap_is_u64(id, cases[i].id, "parse dir '%s': id",
				   cases[i].name);
	}
}

static void test_from_file(void)
{
	static const struct {
		const char *fname;
		int strip;
		const char *name;
	} cases[] = {
	    {"42-signed-up.json", 1, "signed-up"},
	    {"42-signed-up.json", 0, "42-signed-up"},
	    {"Signed up.json", 1, "Signed up"},
	    {"Signed up.json", 0, "Signed up"},
	    {"2024-report.json", 0, "2024-report"},
	    {"2024-report.json", 1, "report"},
	    {"007-x.json", 1, "007-x"},
	    {"Регистрация.json", 1, "Регистрация"},
	    {"a.json.json", 0, "a.json"},
	    {"no-extension", 0, "no-extension"},
	    {"42-a", 1, "a"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = names_from_file(cases[i].fname, cases[i].strip);

		tap_is_str(got, cases[i].name, "from file '%s', strip %d",
			   cases[i].fname, cases[i].strip);
		free(got);
	}
}

int main(int argc, char **argv)
{
	(void)argc;
	tap_start(argv[0]);
	test_slug_examples();
	test_slug_empty();
	test_slug_hostile();
	test_slug_bad_utf8();
	test_slug_emoji();
	test_slug_other_scripts_punctuation();
	test_slug_cut();
	test_slug_property();
	test_action_file();
	test_classify();
	test_parse_dir();
	test_from_file();
	return tap_done();
}
