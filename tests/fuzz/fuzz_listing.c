/*
 * fuzz_listing: the server's list and error bodies (listing.h).
 *
 * The input is a response body, handed over without a NUL after it.
 * Checked: a refused list comes with a reason; an accepted one has a
 * results array whose ids are in 1..2^53-1; every reason made from an
 * error body, in buffers from 1 byte to 4 KiB, is NUL-terminated, valid
 * UTF-8 and free of control characters (C0, DEL, C1), and a 0-byte
 * buffer is left alone.
 */
#include "listing.h"

#include "fuzz.h"

#include <cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* An error text in @errlen bytes: terminated, printable ASCII. */
static void check_err(const char *err, size_t errlen)
{
	size_t n;

	if (!errlen)
		return;
	n = strnlen(err, errlen);
	FUZZ_CHECK(n < errlen, "error text not terminated");
	FUZZ_CHECK(errlen == 1 || n > 0, "no error text");
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK(err[i] >= 0x20 && err[i] < 0x7F,
			   "byte 0x%02x in the error text",
			   (unsigned char)err[i]);
}

static void check_page(const char *body, size_t size, size_t errlen)
{
	struct listing_page page;
	char *err = errlen ? malloc(errlen) : NULL;
	const cJSON *item;
	int rc;

	if (errlen && !err)
		abort();
	rc = listing_parse(body, size, &page, err, errlen);
	FUZZ_CHECK(rc == 0 || rc == -EPROTO, "returned %d", rc);
	if (rc) {
		check_err(err, errlen);
		FUZZ_CHECK(!page.root && !page.results && !page.next,
			   "a refused list left data behind");
	} else {
		FUZZ_CHECK(cJSON_IsArray(page.results), "results not an array");
		FUZZ_CHECK(page.count >= -1, "count %lld", page.count);
		FUZZ_CHECK(!page.has_next || (page.next && page.next[0]),
			   "has_next without a link");
		cJSON_ArrayForEach(item, page.results)
		{
			uint64_t id = 0;
			const char *name = listing_item_name(item);

			if (!listing_item_id(item, &id))
				FUZZ_CHECK(id >= 1 && id < (1ULL << 53),
					   "item id %llu",
					   (unsigned long long)id);
			if (name)
				(void)strlen(name);
		}
	}
	listing_free(&page);
	free(err);
}

static void check_json(const char *body, size_t size)
{
	char err[128];
	cJSON *root;

	memset(err, 'X', sizeof(err));
	root = listing_parse_json(body, size, err, sizeof(err));
	if (!root)
		check_err(err, sizeof(err));
	cJSON_Delete(root);
}

static void check_reason(const char *body, size_t size, long status,
			 size_t outlen)
{
	char *out = malloc(outlen ? outlen : 1); /* exactly: ASan sees past */
	size_t n;
	long c;

	if (!out)
		abort();
	memset(out, 'X', outlen ? outlen : 1);
	listing_error_reason(body, size, status, out, outlen);
	if (!outlen) {
		FUZZ_CHECK(out[0] == 'X', "wrote into a 0-byte buffer");
		free(out);
		return;
	}
	n = strnlen(out, outlen);
	FUZZ_CHECK(n < outlen, "reason not terminated in %zu bytes", outlen);
	c = fuzz_find_control(out, n, -1, 1);
	if (c >= 0) {
		fuzz_dump("reason", out, n);
		FUZZ_FAIL("control character U+%04lX in the reason", c);
	}
	if (!fuzz_utf8_valid(out, n)) {
		fuzz_dump("reason", out, n);
		FUZZ_FAIL("invalid UTF-8 in the reason (%zu-byte buffer)",
			  outlen);
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const long statuses[] = {400, 401, 403, 404, 405, 429,
					500, 503, 0,   -1,  999};
	static const size_t errlens[] = {0, 1, 16, 256};
	uint64_t h = fuzz_hash(data, size);
	char *body = fuzz_exact(data, size);
	long status = statuses[h % (sizeof(statuses) / sizeof(*statuses))];

	check_page(body, size, errlens[(h >> 8) % 4]);
	check_json(body, size);
	check_reason(body, size, status, 0);
	check_reason(body, size, status, 1 + (h >> 16) % 24);
	check_reason(body, size, status, 300); /* what api.c passes */
	check_reason(body, size, status, 4096);
	free(body);
	return 0;
}
