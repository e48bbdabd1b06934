/* diskshelf: the status file of a mount, parsed.
 *
 * The daemon publishes its state as the hidden file
 * MOUNTPOINT/.diskshelf-status: header lines, then one block per entry,
 * "[name]" followed by "key: value" lines that the tree and each layer's
 * status callback write.  status_doc_parse splits that text into blocks;
 * status-json.c turns a parsed document into the stable JSON form.
 *
 * Ownership: a status_doc owns its blocks and strings; status_doc_free
 * releases them.  status_get returns pointers into the document.
 * Thread model: no shared state; one document per thread.
 */
#ifndef DISKSHELF_STATUS_DOC_H
#define DISKSHELF_STATUS_DOC_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* One "key: value" line of a block. */
struct status_line
{
  char *key;
  char *value;
};

/* One block of the status file: the header or an entry. */
struct status_block
{
  char *name;                 /* NULL for the header block */
  struct status_line *lines;
  size_t nlines;
};

struct status_doc
{
  struct status_block *blocks;
  size_t nblocks;
};

/* Split status text (modified in place) into blocks.  Lines that are
 * not "key: value" are kept under the key "text".  Returns 0 or a
 * negative errno; free the document with status_doc_free either way. */
int status_doc_parse (char *text, struct status_doc *doc);

void status_doc_free (struct status_doc *doc);

/* The first value of key in a block, or NULL. */
const char *status_get (const struct status_block *b, const char *key);

/* The leading whole number of a value ("12 bytes" -> 12). */
bool status_get_number (const struct status_block *b, const char *key,
                        uint64_t *out);

/* True when b is an entry among names ("a/b.img", "/a/b.img" or
 * "MOUNTPOINT/a/b.img"), or any entry when nnames is 0; sets found[i]
 * for the name that matched. */
bool status_block_wanted (const struct status_block *b,
                          const char *mountpoint, int nnames, char **names,
                          bool *found);

/* The header and the wanted entries as one JSON document (version
 * STATUS_JSON_VERSION, documented in diskshelf(1), STATUS). */
#define STATUS_JSON_VERSION 1
void status_doc_print_json (FILE *out, const struct status_doc *doc,
                            const char *mountpoint, int nnames, char **names,
                            bool *found);

#endif
