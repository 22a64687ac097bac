/*
 * listing: the server's list and error bodies, whatever their shape.
 *
 * Pure: parses bytes into data. No I/O, no globals, no locks. Nothing
 * from the server is trusted: every field is type-checked.
 *
 * The action list has had three shapes (posthog-api.md section 3):
 *   {"results": [...]}                           everything at once
 *   {"count": N, "results": [...]}               limit/offset honoured
 *   {"count", "next", "previous", "results"}     DRF pages
 */
#ifndef PHFS_LISTING_H
#define PHFS_LISTING_H

#include <stddef.h>
#include <stdint.h>
#include <cJSON.h>

/* Deepest JSON nesting accepted from the server. */
#define LISTING_MAX_DEPTH 64

struct listing_page {
	cJSON *root;     /* owns everything below */
	cJSON *results;  /* the array of items, inside root */
	long long count; /* total from the server, -1 when absent */
	int has_next;    /* a non-null "next" link */
	char *next;      /* malloc'ed copy of "next", or NULL */
};

/*
 * Parses one list response. Returns 0, or -EPROTO when the body is not
 * JSON, too deep, or not a list in any known shape; then @err (if not
 * NULL, @errlen bytes) says why.
 */
int listing_parse(const char *body, size_t len, struct listing_page *page,
		  char *err, size_t errlen);
void listing_free(struct listing_page *page);

/*
 * Parses JSON with a depth bound. Returns NULL (and fills @err) for
 * invalid JSON, a depth over LISTING_MAX_DEPTH or an empty body.
 */
cJSON *listing_parse_json(const char *body, size_t len, char *err,
			  size_t errlen);

/*
 * Reads an item's integer "id" (a positive integer that fits in 53
 * bits). Returns 0 and sets *id, or -1.
 */
int listing_item_id(const cJSON *item, uint64_t *id);

/* The item's "name" if it is a string, else NULL. */
const char *listing_item_name(const cJSON *item);

/*
 * Writes a one-line reason from a PostHog error body
 * ({type, code, detail, attr}) into @out: "detail (attr)". When the body
 * is not such an object, writes a short generic text for @status.
 */
void listing_error_reason(const char *body, size_t len, long status,
			  char *out, size_t outlen);

#endif
