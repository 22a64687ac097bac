/*
 * kernel: what the kernel is given and what it keeps (the kernel-facing
 * half of tree.h). Directory copies handed out in pieces, and for each
 * action which version and which name (inode) the kernel holds
 * attributes and pages of, so that an open knows whether its pages can
 * be kept and whether its attributes must be forgotten first.
 *
 * Runs with the tree lock held, except where a function says otherwise;
 * it never calls into FUSE itself: ops.c sends the invalidations.
 */
#include "tree_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tree_set_kernel_cache(struct tree *t, double attr_timeout, int notify)
{
	pthread_mutex_lock(&t->lock);
	t->attr_timeout = attr_timeout;
	t->kernel_notify = notify;
	pthread_mutex_unlock(&t->lock);
}

/* Set by a save during the current call of this thread. */
static __thread int call_saved;

void kernel_call_begin(void)
{
	call_saved = 0;
}

void tree_note_saved(struct tree *t)
{
	if (t->kernel_notify)
		call_saved = 1;
}

int tree_call_saved(void)
{
	return call_saved;
}

void tree_kernel_unknown(struct action *a)
{
	a->attr_gen = a->page_gen = KERNEL_NONE;
}

void tree_forget_pages(struct tree *t, uint64_t pid, uint64_t aid)
{
	struct project *p = tree_find_project(t, pid);
	struct action **a = p ? tree_find_action(p, aid) : NULL;

	if (a)
		tree_kernel_unknown(*a);
}

/* FNV-1a of a path without its leading '/': which name (inode) of an
 * action the kernel holds something of. */
uint64_t kernel_path_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	if (*s == '/')
		s++;
	while (*s)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
	return h;
}

/* The kernel_path_hash of "<project dir>/<name>". */
static uint64_t dir_entry_hash(const struct project *p, const char *name)
{
	char path[NAMES_FILE_MAX * 4];

	snprintf(path, sizeof(path), "%s/%s", p->dname, name);
	return kernel_path_hash(path);
}

unsigned long kernel_size(const struct action *a, off_t *size)
{
	/* While handles read an older version through the page cache, the
	 * kernel keeps its size: the size those reads stop at. */
	if (a->page_opens && a->page_gen != a->gen) {
		*size = (off_t)a->page_len;
		return a->page_gen;
	}
	*size = (off_t)a->content->len;
	return a->gen;
}

off_t kernel_handle_stat(struct tree *t, const struct tree_handle *h)
{
	struct action *a = h->aid ? tree_handle_action(t, h) : NULL;
	off_t size;

	if (h->kind == H_ACTION) {
		if (a) /* the buffer's size, which is no version */
			tree_kernel_unknown(a);
		return (off_t)h->len;
	}
	if (!a)
		return (off_t)h->blob->len;
	a->attr_gen = kernel_size(a, &size);
	a->attr_path = kernel_path_hash(h->fname);
	return size;
}

void kernel_writer(struct action *a, struct tree_handle *h)
{
	tree_kernel_unknown(a); /* it will hold the sizes written */
	if (!h->writer) {
		a->writers++;
		h->writer = 1;
	}
}

void kernel_release(struct tree *t, struct tree_handle *h)
{
	struct action *a = h->aid ? tree_handle_action(t, h) : NULL;

	if (!a)
		return;
	if (h->paged && a->page_opens)
		a->page_opens--;
	if (h->dropping && a->page_drops)
		a->page_drops--;
	if (h->writer && a->writers)
		a->writers--;
	if (h->kind == H_ACTION) /* the kernel has sizes written */
		tree_kernel_unknown(a);
}

void tree_open_done(struct tree_handle *h)
{
	struct tree *t = h->t;
	struct action *a;

	pthread_mutex_lock(&t->lock);
	a = h->dropping ? tree_handle_action(t, h) : NULL;
	if (a && a->page_drops)
		a->page_drops--;
	h->dropping = 0;
	pthread_mutex_unlock(&t->lock);
}

/* Grows @arr (of @size-byte items) to @cap items; 0 or -ENOMEM. */
static int grow(void *arr, size_t size, size_t cap)
{
	void *p = realloc(*(void **)arr, cap * size);

	if (!p)
		return -ENOMEM;
	*(void **)arr = p;
	return 0;
}

int tree_dir_add(struct tree_dir *d, const char *name, const struct stat *st)
{
	if (d->count == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;

		if (grow(&d->names, sizeof(*d->names), cap) ||
		    grow(&d->stats, sizeof(*d->stats), cap) ||
		    grow(&d->aids, sizeof(*d->aids), cap) ||
		    grow(&d->gens, sizeof(*d->gens), cap))
			return -ENOMEM;
		d->cap = cap;
	}
	d->names[d->count] = strdup(name);
	if (!d->names[d->count])
		return -ENOMEM;
	d->aids[d->count] = 0;
	d->gens[d->count] = 0;
	d->stats[d->count++] = *st;
	return 0;
}

size_t tree_dir_count(const struct tree_dir *d)
{
	return d->count;
}

const char *tree_dir_name(const struct tree_dir *d, size_t i)
{
	return d->names[i];
}

const struct stat *tree_dir_stat(const struct tree_dir *d, size_t i)
{
	return &d->stats[i];
}

int tree_dir_exact(const struct tree_dir *d)
{
	return d->exact;
}

void tree_dir_free(struct tree_dir *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->count; i++)
		free(d->names[i]);
	free(d->names);
	free(d->stats);
	free(d->aids);
	free(d->gens);
	free(d);
}

void tree_dir_given(struct tree *t, const struct tree_dir *d, size_t from,
		    size_t to)
{
	struct project *p;

	pthread_mutex_lock(&t->lock);
	p = d->pid ? tree_find_project(t, d->pid) : NULL;
	for (size_t i = from; p && i < to && i < d->count; i++) {
		struct action **a =
			d->aids[i] ? tree_find_action(p, d->aids[i]) : NULL;

		off_t size;

		if (!a)
			continue;
		if (kernel_size(*a, &size) != d->gens[i]) {
			tree_kernel_unknown(*a); /* another size went */
			continue;
		}
		(*a)->attr_gen = d->gens[i];
		(*a)->attr_path = dir_entry_hash(p, d->names[i]);
	}
	pthread_mutex_unlock(&t->lock);
}

/*
 * How an action file opened to read uses the kernel's caches. Pages are
 * kept while they hold this version read through this name (a grep over
 * a warm tree then costs no read). At the open of another version or
 * name they are dropped, by the caller's invalidation before the open
 * returns; until then (tree_open_done) other opens read past the cache.
 * So do opens while writers move the size, while handles read an older
 * version through the cache, within a second of a change, and all with
 * ttl=0. Attributes the kernel may hold of another version are
 * invalidated before the open ends, so that a stat or a read right after
 * it sees the size.
 */
void kernel_open(struct tree *t, struct action *a, struct tree_handle *h,
		 struct tree_open_result *out)
{
	uint64_t path = kernel_path_hash(h->fname);
	int same = a->page_gen == a->gen && a->page_path == path;
	off_t size;
	unsigned long gen = kernel_size(a, &size);

	out->invalidate = t->kernel_notify &&
			  (a->attr_gen != gen || a->attr_path != path);
	a->attr_gen = gen;
	a->attr_path = path;
	if (a->writers || a->page_drops ||
	    (a->page_opens && a->page_gen != a->gen)) {
		out->direct_io = 1;
		out->keep_cache = 1; /* theirs */
		return;
	}
	/* Without notifications (attr_timeout + 1) the kernel may still
	 * hold an old size. */
	if (t->opts.ttl == 0 ||
	    tree_now() - a->changed <
		    (t->kernel_notify ? 0 : t->attr_timeout) + 1) {
		out->direct_io = 1;
		a->page_gen = KERNEL_NONE;
		return;
	}
	if (!same && a->paged_ever && t->kernel_notify) {
		out->invalidate = 1; /* drops the pages before the open ends */
		a->page_drops++;
		h->dropping = 1;
	}
	/* Without notifications the kernel drops the pages at each open. */
	out->keep_cache = same && t->kernel_notify;
	a->paged_ever = 1;
	a->page_gen = a->gen;
	a->page_path = path;
	a->page_len = a->content->len;
	a->page_opens++;
	h->paged = 1;
}
