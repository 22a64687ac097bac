/*
 * meta: MOUNT/.phfs, phfs's own directory: log (recent errors and
 * notices), stats (counters) and csv/<project>.csv (the server's
 * format=csv listing of a project, for spreadsheets). Read-only.
 *
 * Never sends anything but a GET, and never holds the tree lock across
 * one.
 */
#include "tree_int.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *stats_text(struct tree *t, size_t *len)
{
	struct api_stats s;
	unsigned long hits, misses, stale, saves, failed, conflicts, reads;
	unsigned long projs = 0, acts = 0, locals = 0;
	char *out = NULL;
	int n;

	api_stats(t->api, &s);
	pthread_mutex_lock(&t->lock);
	hits = t->cache_hits;
	misses = t->cache_misses;
	stale = t->served_stale;
	saves = t->saves;
	failed = t->saves_failed;
	conflicts = t->conflicts;
	reads = t->reads_served;
	projs = t->nprojs;
	for (size_t i = 0; i < t->nprojs; i++) {
		acts += t->projs[i]->nacts;
		for (struct local *l = t->projs[i]->locals; l; l = l->next)
			locals++;
	}
	pthread_mutex_unlock(&t->lock);
	n = asprintf(&out,
		     "requests_total %lu\nrequests_get %lu\n"
		     "requests_post %lu\nrequests_patch %lu\n"
		     "requests_put %lu\nrequests_delete %lu\n"
		     "retries %lu\nfailures %lu\ncache_hits %lu\n"
		     "cache_misses %lu\nserved_stale %lu\nsaves %lu\n"
		     "saves_failed %lu\nconflicts %lu\nprojects %lu\n"
		     "actions_cached %lu\nlocal_files %lu\nreads_served %lu\n",
		     s.get + s.post + s.patch + s.put + s.del, s.get, s.post,
		     s.patch, s.put, s.del, s.retries, s.failures, hits,
		     misses, stale, saves, failed, conflicts, projs, acts,
		     locals, reads);
	if (n < 0)
		return NULL;
	*len = (size_t)n;
	return out;
}

static char *meta_text(struct tree *t, enum node_kind kind, size_t *len)
{
	return kind == NODE_META_LOG ? log_ring_text(len)
				     : stats_text(t, len);
}


int meta_resolve(struct tree *t, const char *rest, struct node *n)
{
	const char *csv = NULL;
	char dname[NAMES_FILE_MAX + 8];
	size_t len;

	if (!*rest)
		n->kind = NODE_META;
	else if (!strcmp(rest, "log"))
		n->kind = NODE_META_LOG;
	else if (!strcmp(rest, "stats"))
		n->kind = NODE_META_STATS;
	else if (!strcmp(rest, "csv"))
		n->kind = NODE_META_CSVDIR;
	else if (!strncmp(rest, "csv/", 4))
		csv = rest + 4;
	else
		return -ENOENT;
	if (!csv)
		return 0;
	/* "<project dir>.csv", by its listed name or any alias of it. */
	len = strlen(csv);
	if (len < 5 || len - 4 >= sizeof(dname) || strcmp(csv + len - 4, ".csv"))
		return -ENOENT;
	memcpy(dname, csv, len - 4);
	dname[len - 4] = '\0';
	if (names_parse_dir(dname, &n->pid) || !tree_find_project(t, n->pid))
		return -ENOENT;
	n->kind = NODE_META_CSV;
	return 0;
}

int meta_readdir(struct tree *t, const struct node *n, struct tree_dir *d)
{
	struct stat f;
	char name[NAMES_FILE_MAX + 8];
	int rc = 0;

	tree_fill_stat(t, &f, 0, 0, NULL);
	f.st_mode &= ~0222;
	if (n->kind == NODE_META_CSVDIR) {
		for (size_t i = 0; !rc && i < t->nprojs; i++) {
			struct project *p = t->projs[i];

			snprintf(name, sizeof(name), "%s.csv", p->dname);
			f.st_size = p->csv ? (off_t)p->csv->len : 0;
			rc = tree_dir_add(d, name, &f);
		}
		return rc;
	}
	rc = tree_dir_add(d, "log", &f);
	if (!rc)
		rc = tree_dir_add(d, "stats", &f);
	if (!rc) {
		struct stat dir;

		tree_fill_stat(t, &dir, 1, 0, NULL);
		dir.st_mode &= ~0222;
		rc = tree_dir_add(d, "csv", &dir);
	}
	return rc;
}

/* The CSV of a project: from memory within ttl, else from the server.
 * Returns a reference, or NULL with -errno in *rc. */
static struct blob *project_csv(struct tree *t, uint64_t pid, int *rc)
{
	struct api_err e = {0};
	struct project *p;
	struct blob *b = NULL;
	char *body = NULL;
	size_t len = 0;

	pthread_mutex_lock(&t->lock);
	p = tree_find_project(t, pid);
	if (p && p->csv && tree_now() - p->csv_fetched < t->opts.ttl)
		b = blob_ref(p->csv);
	pthread_mutex_unlock(&t->lock);
	if (b || !p) {
		*rc = p ? 0 : -ENOENT;
		return b;
	}
	*rc = api_get_csv(t->api, pid, &body, &len, &e);
	pthread_mutex_lock(&t->lock);
	p = tree_find_project(t, pid);
	if (!*rc) {
		b = blob_new(body, len);
		if (b && p) {
			blob_unref(p->csv);
			p->csv = blob_ref(b);
			p->csv_fetched = tree_now();
		}
		*rc = b ? 0 : -ENOMEM;
	} else if (p && p->csv && e.err == EIO) {
		log_notice("%s.csv: serving the cached copy: %s", p->dname, e.msg);
		b = blob_ref(p->csv);
		*rc = 0;
	} else {
		log_error("%s.csv: %s", p ? p->dname : "?", e.msg);
	}
	pthread_mutex_unlock(&t->lock);
	free(body);
	return b;
}

int meta_getattr(struct tree *t, const struct node *n, struct stat *st)
{
	struct project *p;
	size_t len = 0;
	char *text;

	if (n->kind == NODE_META_CSVDIR) {
		tree_fill_stat(t, st, 1, 0, NULL);
		st->st_mode &= ~0222;
		return 0;
	}
	if (n->kind == NODE_META_CSV) {
		/* The size known so far: the file is read to its end. */
		pthread_mutex_lock(&t->lock);
		p = tree_find_project(t, n->pid);
		len = p && p->csv ? p->csv->len : 0;
		pthread_mutex_unlock(&t->lock);
	} else {
		text = meta_text(t, n->kind, &len);
		free(text);
	}
	tree_fill_stat(t, st, 0, (off_t)len, NULL);
	st->st_mode &= ~0222;
	clock_gettime(CLOCK_REALTIME, &st->st_mtim);
	return 0;
}

int meta_open(struct tree *t, const struct node *n, struct tree_handle *h)
{
	size_t len = 0;
	char *text;
	int rc = 0;

	if (n->kind == NODE_META_CSV) {
		h->blob = project_csv(t, n->pid, &rc);
		return rc;
	}
	text = meta_text(t, n->kind, &len);
	h->blob = text ? blob_new(text, len) : NULL;
	free(text);
	return h->blob ? 0 : -ENOMEM;
}
