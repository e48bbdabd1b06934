/* diskshelf: building the mount's directory tree and opening entries. */
#include "tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "entry.h"
#include "entry_checks.h"
#include "error.h"
#include "text.h"
#include "thread.h"

#define OPEN_THREADS_MAX 16

/* Read a whole small file into a malloc'd NUL-terminated string. */
static char *
read_text (const char *path, struct timespec *mtime)
{
  FILE *fp = fopen (path, "re");
  char *text = NULL;
  size_t len = 0;
  struct stat st;

  if (fp == NULL)
    return NULL;
  if (fstat (fileno (fp), &st) == 0)
    *mtime = st.st_mtim;
  FILE *mem = open_memstream (&text, &len);
  if (mem)
    {
      char buf[4096];
      size_t n;
      while ((n = fread (buf, 1, sizeof buf, fp)) > 0)
        fwrite (buf, 1, n, mem);
      fclose (mem);
    }
  fclose (fp);
  return text;
}

/* Take a reference on an entry. */
void
fs_entry_ref (struct fs_entry *e)
{
  __atomic_add_fetch (&e->refs, 1, __ATOMIC_ACQ_REL);
}

/* Drop a reference; the last one closes the stack. */
void
fs_entry_unref (struct fs_entry *e)
{
  if (e == NULL || __atomic_sub_fetch (&e->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  if (e->stack)
    log_info ("%s: closed", e->config->name);
  layer_close (e->stack);
  entry_free (e->config);
  free (e->conf_text);
  free (e->open_error);
  free (e->last_error);
  pthread_mutex_destroy (&e->lock);
  free (e);
}

/* Keep the last error of an entry and log it. */
void
fs_entry_record_error (struct fs_entry *e, const char *what)
{
  char *copy = strdup (what);

  pthread_mutex_lock (&e->lock);
  if (copy)
    {
      free (e->last_error);
      e->last_error = copy;
    }
  e->last_error_time = time (NULL);
  e->errors++;
  pthread_mutex_unlock (&e->lock);
  log_error ("%s: %s", e->config->name, what);
}

/* Free a node and its subtree, dropping entry references. */
static void
free_node (struct fs_node *n)
{
  if (n == NULL)
    return;
  for (size_t i = 0; i < n->nchildren; i++)
    free_node (n->children[i]);
  free (n->children);
  if (n->entry)
    fs_entry_unref (n->entry);
  free (n->name);
  free (n);
}

/* The child of dir called name (length len), or NULL. */
static struct fs_node *
find_child (struct fs_node *dir, const char *name, size_t len)
{
  for (size_t i = 0; i < dir->nchildren; i++)
    if (strlen (dir->children[i]->name) == len
        && memcmp (dir->children[i]->name, name, len) == 0)
      return dir->children[i];
  return NULL;
}

/* Make a new child node of dir. */
static struct fs_node *
add_child (struct fs_node *dir, const char *name, size_t len)
{
  struct fs_node *n = calloc (1, sizeof *n);
  struct fs_node **grown;

  if (n == NULL || (n->name = strndup (name, len)) == NULL)
    {
      free (n);
      return NULL;
    }
  grown = realloc (dir->children, (dir->nchildren + 1) * sizeof *grown);
  if (grown == NULL)
    {
      free (n->name);
      free (n);
      return NULL;
    }
  dir->children = grown;
  dir->children[dir->nchildren++] = n;
  return n;
}

/* Place an entry at its path, making directories on the way. */
static int
insert_entry (struct fs_tree *tree, struct fs_entry *e)
{
  const char *p = e->config->name;
  struct fs_node *dir = tree->root;

  for (;;)
    {
      const char *slash = strchr (p, '/');
      size_t len = slash ? (size_t) (slash - p) : strlen (p);
      struct fs_node *child = find_child (dir, p, len);

      if (slash == NULL)
        {
          if (child)
            return error_set (EEXIST, "%s: a directory of the same name"
                              " exists", e->config->conf_path);
          child = add_child (dir, p, len);
          if (child == NULL)
            return error_set (ENOMEM, "out of memory");
          child->entry = e;
          return 0;
        }
      if (child && child->entry)
        return error_set (EEXIST, "%s: an entry '%.*s' stands where a"
                          " directory is needed", e->config->conf_path,
                          (int) (slash - e->config->name),
                          e->config->name);
      if (child == NULL)
        child = add_child (dir, p, len);
      if (child == NULL)
        return error_set (ENOMEM, "out of memory");
      dir = child;
      p = slash + 1;
    }
}

/* Sort children by name recursively, so readdir is stable. */
static int
compare_nodes (const void *a, const void *b)
{
  const struct fs_node *const *x = a, *const *y = b;
  return strcmp ((*x)->name, (*y)->name);
}

static void
sort_tree (struct fs_node *n)
{
  if (n->nchildren > 1)
    qsort (n->children, n->nchildren, sizeof *n->children, compare_nodes);
  for (size_t i = 0; i < n->nchildren; i++)
    sort_tree (n->children[i]);
}

/* Work shared by the threads that open new entries. */
struct open_job
{
  const struct stack_context *base;
  struct fs_entry **entries;
  size_t count;
  size_t next;                    /* atomic */
};

/* Thread body: open stacks until none are left. */
static void *
open_worker (void *arg)
{
  struct open_job *job = arg;

  for (;;)
    {
      size_t i = __atomic_fetch_add (&job->next, 1, __ATOMIC_ACQ_REL);
      struct fs_entry *e;
      struct stack_context ctx;

      if (i >= job->count)
        return NULL;
      e = job->entries[i];
      if (e->stack)
        continue;
      ctx = *job->base;
      ctx.entry = e->config;
      error_clear ();
      if (entry_static_check (e->config) < 0
          || stack_open (&ctx, &e->stack) < 0)
        {
          log_error ("%s: left out of the mount: %s", e->config->name,
                     error_message ());
          e->open_error = strdup (error_message ());
          e->stack = NULL;
        }
      else
        {
          char layers[128];
          layer_describe (e->stack, layers, sizeof layers);
          log_info ("%s: ready (%s, %llu bytes%s)", e->config->name, layers,
                    (unsigned long long) e->stack->size,
                    e->stack->writable ? ", writable" : "");
        }
    }
}

/* Open the stacks of new entries on a few threads at once. */
static void
open_entries (const struct stack_context *base, struct fs_entry **entries,
              size_t count)
{
  struct open_job job = { base, entries, count, 0 };
  pthread_t threads[OPEN_THREADS_MAX];
  size_t nthreads = count < OPEN_THREADS_MAX ? count : OPEN_THREADS_MAX;
  size_t started = 0;

  for (size_t i = 0; i < nthreads; i++)
    if (thread_create (&threads[started], NULL, open_worker, &job) == 0)
      started++;
  if (started == 0)
    open_worker (&job);
  for (size_t i = 0; i < started; i++)
    pthread_join (threads[i], NULL);
}

/* Find the entry of the same name, config text and .conf mtime in a
 * previous tree.  A new mtime alone (`touch NAME.conf`) is a new version:
 * the way to make the daemon reopen a source that changed remotely. */
static struct fs_entry *
find_reusable (struct fs_tree *previous, const struct entry_config *config,
               const char *text, struct timespec mtime)
{
  struct fs_node *n;
  char path[4096];

  if (previous == NULL || text == NULL)
    return NULL;
  snprintf (path, sizeof path, "/%s", config->name);
  n = fs_tree_lookup (previous, path);
  if (n == NULL || n->entry == NULL || n->entry->conf_text == NULL
      || strcmp (n->entry->conf_text, text) != 0
      || n->entry->mtime.tv_sec != mtime.tv_sec
      || n->entry->mtime.tv_nsec != mtime.tv_nsec)
    return NULL;
  return n->entry;
}

/* Append a row to the tree's list of broken entries. */
static void
add_broken (struct fs_tree *tree, const char *rows)
{
  size_t old = tree->broken ? strlen (tree->broken) : 0;
  size_t add = strlen (rows);
  char *grown = realloc (tree->broken, old + add + 1);

  if (grown == NULL)
    return;
  memcpy (grown + old, rows, add + 1);
  tree->broken = grown;
}

/* Note an entry that opened but could not be placed, or did not open. */
static void
add_broken_entry (struct fs_tree *tree, struct fs_entry *e,
                  const char *message)
{
  char *row = entry_problem_row (e->config, e->conf_text, message);

  if (row)
    add_broken (tree, row);
  free (row);
  tree->broken_count++;
}

/* Build a tree for a catalog. */
int
fs_tree_build (struct catalog *catalog, struct fs_tree *previous,
               const struct stack_context *base, struct fs_tree **out)
{
  struct fs_tree *tree = calloc (1, sizeof *tree);
  struct fs_entry **entries = calloc (catalog->count + 1, sizeof *entries);

  if (tree == NULL || entries == NULL
      || (tree->root = calloc (1, sizeof *tree->root)) == NULL
      || (tree->root->name = strdup ("")) == NULL)
    {
      free (entries);
      if (tree)
        free (tree->root);
      free (tree);
      return error_set (ENOMEM, "out of memory");
    }
  tree->refs = 1;
  tree->broken_count = catalog->error_count;
  if (catalog->errors)
    add_broken (tree, catalog->errors);
  for (size_t i = 0; i < catalog->count; i++)
    {
      struct entry_config *config = catalog->entries[i];
      struct timespec mtime = { 0, 0 };
      char *text = read_text (config->conf_path, &mtime);
      struct fs_entry *old = find_reusable (previous, config, text, mtime);

      if (old)
        {
          fs_entry_ref (old);
          entries[i] = old;
          free (text);
          entry_free (config);
          continue;
        }
      entries[i] = calloc (1, sizeof *entries[i]);
      if (entries[i] == NULL)
        {
          free (text);
          entry_free (config);
          continue;
        }
      entries[i]->refs = 1;
      entries[i]->config = config;
      entries[i]->conf_text = text;
      entries[i]->mtime = mtime;
      pthread_mutex_init (&entries[i]->lock, NULL);
    }
  size_t count = catalog->count;
  catalog->count = 0;   /* the entries are ours now */
  open_entries (base, entries, count);
  for (size_t i = 0; i < count; i++)
    {
      struct fs_entry *e = entries[i];

      if (e == NULL)
        continue;
      if (e->stack == NULL)
        {
          add_broken_entry (tree, e, e->open_error ? e->open_error
                            : "cannot open");
          fs_entry_unref (e);
          continue;
        }
      if (insert_entry (tree, e) < 0)
        {
          log_error ("%s: left out of the mount: %s", e->config->name,
                     error_message ());
          add_broken_entry (tree, e, error_message ());
          fs_entry_unref (e);
          continue;
        }
      tree->entry_count++;
      tree->total_size += e->stack->size;
    }
  sort_tree (tree->root);
  free (entries);
  *out = tree;
  return 0;
}

/* Walk path components from the root. */
struct fs_node *
fs_tree_lookup (struct fs_tree *tree, const char *path)
{
  struct fs_node *n = tree->root;

  while (*path == '/')
    path++;
  while (*path && n)
    {
      size_t len = strcspn (path, "/");
      n = find_child (n, path, len);
      path += len;
      while (*path == '/')
        path++;
    }
  return n;
}

/* Take a reference on a tree. */
void
fs_tree_ref (struct fs_tree *tree)
{
  __atomic_add_fetch (&tree->refs, 1, __ATOMIC_ACQ_REL);
}

/* Drop a reference; the last one frees the nodes (entries stay alive
 * while open files hold them). */
void
fs_tree_unref (struct fs_tree *tree)
{
  if (tree == NULL
      || __atomic_sub_fetch (&tree->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  free_node (tree->root);
  free (tree->broken);
  free (tree);
}

/* Visit the entries at and below a node. */
static void
node_for_each (struct fs_node *n, void (*fn) (struct fs_entry *, void *),
               void *arg)
{
  if (n->entry)
    fn (n->entry, arg);
  for (size_t i = 0; i < n->nchildren; i++)
    node_for_each (n->children[i], fn, arg);
}

/* Call fn on every entry of the tree. */
void
fs_tree_for_each_entry (struct fs_tree *tree,
                        void (*fn) (struct fs_entry *e, void *arg), void *arg)
{
  node_for_each (tree->root, fn, arg);
}

/* Status of one entry and the nodes below. */
static void
node_status (struct fs_node *n, FILE *out)
{
  if (n->entry)
    {
      struct fs_entry *e = n->entry;
      char layers[128], source[1024];

      layer_describe (e->stack, layers, sizeof layers);
      text_redact_url (e->config->source ? e->config->source
                       : e->config->command[0], source, sizeof source);
      fprintf (out, "[%s]\n", e->config->name);
      fprintf (out, "source: %s\n", source);
      fprintf (out, "stack: %s\n", layers);
      fprintf (out, "size: %llu\n", (unsigned long long) e->stack->size);
      fprintf (out, "mode: %s\n", e->stack->writable ? "read-write"
               : "read-only");
      pthread_mutex_lock (&e->lock);
      fprintf (out, "errors: %llu\n", e->errors);
      if (e->last_error)
        {
          char stamp[32];
          struct tm tm;

          fprintf (out, "last-error: %s\n", e->last_error);
          if (gmtime_r (&e->last_error_time, &tm)
              && strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm))
            fprintf (out, "last-error-time: %s\n", stamp);
        }
      pthread_mutex_unlock (&e->lock);
      layer_status (e->stack, out);
      fprintf (out, "\n");
    }
  for (size_t i = 0; i < n->nchildren; i++)
    node_status (n->children[i], out);
}

/* Status of every entry. */
void
fs_tree_status (struct fs_tree *tree, FILE *out)
{
  fprintf (out, "entries: %zu\nbroken: %zu\n", tree->entry_count,
           tree->broken_count);
  /* Every broken entry, whole: FILE:LINE: reason. */
  for (const char *row = tree->broken; row && *row;)
    {
      size_t len = strcspn (row, "\n");
      fprintf (out, "broken-entry: %.*s\n", (int) len, row);
      row += len + (row[len] == '\n');
    }
  fprintf (out, "\n");
  node_status (tree->root, out);
}
