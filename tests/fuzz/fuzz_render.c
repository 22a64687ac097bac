/*
 * fuzz_render: the text of an action file from any JSON (action.h).
 *
 * The input is parsed with cJSON and rendered. Checked: the text ends
 * in '\n', is valid UTF-8 without raw control characters but '\n',
 * parses back, and renders back to the same bytes; rendering fails only
 * past ACTION_MAX_DEPTH. The first 8 bytes, read as a double, also go
 * through action_format_number, which must read back as that double.
 */
#include "action.h"

#include "fuzz.h"

#include <cJSON.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The deepest value, the top one at 0: what action_render counts. */
static int depth_of(const cJSON *v, int depth)
{
	int max = depth;

	for (const cJSON *c = v->child; c; c = c->next) {
		int d = depth_of(c, depth + 1);

		if (d > max)
			max = d;
	}
	return max;
}

static void check_number(const uint8_t *data, size_t size)
{
	char *out = malloc(ACTION_NUMBER_MAX); /* exactly: ASan sees past */
	double d = 0, back, want;
	size_t n;

	if (!out)
		abort();
	memcpy(&d, data, size < sizeof(d) ? size : sizeof(d));
	action_format_number(d, out);
	n = strnlen(out, ACTION_NUMBER_MAX);
	FUZZ_CHECK(n < ACTION_NUMBER_MAX, "number text not terminated");
	FUZZ_CHECK(strspn(out, "0123456789-+.e") == n || !strcmp(out, "null"),
		   "number text \"%s\" for %a", out, d);
	if (isnan(d)) {
		FUZZ_CHECK(!strcmp(out, "null"), "NaN as \"%s\"", out);
	} else {
		want = isinf(d) ? (d > 0 ? DBL_MAX : -DBL_MAX) : d;
		back = strtod(out, NULL);
		FUZZ_CHECK(back == want && !signbit(back) == !signbit(want),
			   "%a printed as \"%s\" reads back as %a", d, out,
			   back);
	}
	free(out);
}

static void check_text(const char *text, size_t len)
{
	long c;

	FUZZ_CHECK(len > 0 && text[len - 1] == '\n', "no final newline");
	FUZZ_CHECK(strlen(text) == len, "a NUL inside the text");
	if (!fuzz_utf8_valid(text, len)) {
		fuzz_dump("text", text, len);
		FUZZ_FAIL("invalid UTF-8 in the text");
	}
	/* C1 stays raw: `jq .` prints it so, and the file must match jq. */
	c = fuzz_find_control(text, len, '\n', 0);
	if (c >= 0) {
		fuzz_dump("text", text, len);
		FUZZ_FAIL("raw control character U+%04lX", c);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cJSON *json, *again;
	char *text, *text2;
	size_t len = 0, len2 = 0;
	int depth;

	check_number(data, size);

	json = cJSON_ParseWithLength((const char *)data, size);
	if (!json)
		return 0;
	depth = depth_of(json, 0);
	text = action_render(json, &len);
	cJSON_Delete(json);
	if (!text) {
		FUZZ_CHECK(depth > ACTION_MAX_DEPTH,
			   "NULL at depth %d, within %d", depth,
			   ACTION_MAX_DEPTH);
		return 0;
	}
	FUZZ_CHECK(depth <= ACTION_MAX_DEPTH, "rendered depth %d", depth);
	check_text(text, len);

	again = cJSON_ParseWithLength(text, len);
	if (!again) {
		fuzz_dump("text", text, len);
		FUZZ_FAIL("the text does not parse back");
	}
	text2 = action_render(again, &len2);
	cJSON_Delete(again);
	if (!text2 || len2 != len || memcmp(text, text2, len)) {
		fuzz_dump("text", text, len);
		if (text2)
			fuzz_dump("rendered again", text2, len2);
		FUZZ_FAIL("rendering the text again changes it");
	}
	free(text2);
	free(text);
	return 0;
}
