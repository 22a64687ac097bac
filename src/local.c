/*
 * local: files held in memory only (see tree_int.h): scratch files of
 * editors and tools, and action files not saved yet. Never sent to the
 * server from here; save.c decides when their content becomes a save.
 *
 * Called with the tree lock held. Every byte is counted against
 * LOCAL_FILE_MAX and LOCAL_TOTAL_MAX, past which writes get ENOSPC. At
 * unmount, what never reached the server is written to disk.
 */
#include "tree_int.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct local *local_find(struct project *p, const char *name)
{
	for (struct local *l = p->locals; l; l = l->next)
		if (!strcmp(l->name, name))
			return l;
	return NULL;
}

struct local *local_new(struct tree *t, struct project *p, const char *name,
			mode_t mode)
{
	struct local *l = calloc(1, sizeof(*l));

	(void)t;
	if (!l)
		return NULL;
	l->name = strdup(name);
	if (!l->name) {
		free(l);
		return NULL;
	}
	l->mode = mode;
	l->refs = 1;
	l->linked = 1;
	clock_gettime(CLOCK_REALTIME, &l->mtime);
	l->next = p->locals;
	p->locals = l;
	return l;
}

/* Makes room for @size bytes, within the caps. */
static int reserve(struct tree *t, struct local *l, size_t size)
{
	size_t cap;
	char *data;

	if (size > LOCAL_FILE_MAX)
		return -ENOSPC;
	if (size > l->len && t->local_bytes + (size - l->len) > LOCAL_TOTAL_MAX)
		return -ENOSPC;
	if (size <= l->cap)
		return 0;
	cap = l->cap ? l->cap : 4096;
	while (cap < size)
		cap *= 2;
	data = realloc(l->data, cap);
	if (!data)
		return -ENOMEM;
	l->data = data;
	l->cap = cap;
	return 0;
}

static void set_len(struct tree *t, struct local *l, size_t len)
{
	t->local_bytes = t->local_bytes - l->len + len;
	l->len = len;
	clock_gettime(CLOCK_REALTIME, &l->mtime);
}

int local_set(struct tree *t, struct local *l, const char *data, size_t len)
{
	int rc = reserve(t, l, len);

	if (rc)
		return rc;
	if (len)
		memcpy(l->data, data, len);
	set_len(t, l, len);
	return 0;
}

int local_write(struct tree *t, struct local *l, const char *buf,
		size_t size, off_t off)
{
	size_t end;
	int rc;

	if (off < 0 || (size_t)off > LOCAL_FILE_MAX)
		return -ENOSPC;
	end = (size_t)off + size;
	rc = reserve(t, l, end > l->len ? end : l->len);
	if (rc)
		return rc;
	if ((size_t)off > l->len)
		memset(l->data + l->len, 0, (size_t)off - l->len);
	memcpy(l->data + off, buf, size);
	set_len(t, l, end > l->len ? end : l->len);
	return (int)size;
}

int local_truncate(struct tree *t, struct local *l, off_t size)
{
	int rc;

	if (size < 0)
		return -EINVAL;
	rc = reserve(t, l, (size_t)size);
	if (rc)
		return rc;
	if ((size_t)size > l->len)
		memset(l->data + l->len, 0, (size_t)size - l->len);
	set_len(t, l, (size_t)size);
	return 0;
}

static void local_free(struct tree *t, struct local *l)
{
	t->local_bytes -= l->len;
	blob_unref(l->base);
	free(l->data);
	free(l->name);
	free(l);
}

void local_unref(struct tree *t, struct local *l)
{
	if (--l->refs == 0)
		local_free(t, l);
}

void local_unlink(struct tree *t, struct project *p, struct local *l)
{
	struct local **pp;

	if (!l->linked)
		return;
	for (pp = &p->locals; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	l->next = NULL;
	l->linked = 0;
	local_unref(t, l);
}

void local_free_all(struct tree *t, struct project *p)
{
	while (p->locals)
		local_unlink(t, p, p->locals);
}

/* Creates @path and its parents, like mkdir -p, mode 0700. */
static int make_dirs(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) && errno != EEXIST) {
			*p = '/';
			return -1;
		}
		*p = '/';
	}
	return mkdir(path, 0700) && errno != EEXIST ? -1 : 0;
}

/* Writes @l's bytes to a new file in @dir; never replaces one. */
static int keep_one(const char *dir, const struct local *l)
{
	char path[PATH_MAX];
	int fd = -1;

	for (int n = 0; n < 100 && fd < 0; n++) {
		int len = n ? snprintf(path, sizeof(path), "%s/%s.%d", dir,
				       l->name, n)
			    : snprintf(path, sizeof(path), "%s/%s", dir,
				       l->name);

		if (len < 0 || (size_t)len >= sizeof(path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST)
			return -1;
	}
	if (fd < 0)
		return -1;
	for (size_t done = 0; done < l->len;) {
		ssize_t n = write(fd, l->data + done, l->len - done);

		if (n <= 0) {
			close(fd);
			return -1;
		}
		done += (size_t)n;
	}
	return close(fd);
}

static int is_unsaved(const struct local *l)
{
	size_t n = strlen(l->name);
	uint64_t ignored;

	if ((l->mode & S_IFMT) != S_IFREG || !l->len)
		return 0;
	return names_classify(l->name, &ignored) != NAMES_SCRATCH ||
	       (n > 9 && !strcmp(l->name + n - 9, ".rejected"));
}

void tree_keep_unsaved(struct tree *t, const char *dir)
{
	size_t kept = 0, failed = 0;

	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->nprojs; i++) {
		struct project *p = t->projs[i];
		char sub[PATH_MAX];
		int len = snprintf(sub, sizeof(sub), "%s/%s", dir, p->dname);

		if (len < 0 || (size_t)len >= sizeof(sub))
			continue;
		for (struct local *l = p->locals; l; l = l->next) {
			if (!is_unsaved(l))
				continue;
			if (make_dirs(sub) || keep_one(sub, l)) {
				log_error("%s/%s: could not be kept in %s: %s",
					  p->dname, l->name, sub,
					  strerror(errno));
				failed++;
			} else {
				kept++;
			}
		}
	}
	pthread_mutex_unlock(&t->lock);
	if (kept)
		log_notice("kept %zu unsaved file%s in %s", kept,
			   kept == 1 ? "" : "s", dir);
	(void)failed;
}
