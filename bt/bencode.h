/* diskshelf bt: a strict bencode parser (BEP 3) that keeps raw spans.
 *
 * The parser builds a tree of nodes that point into the caller's buffer,
 * so the info dictionary can be hashed over exactly the bytes it came
 * from.  It is strict: integers have one canonical form (no leading
 * zeros, no "-0", at most 63 bits), string lengths must fit the input,
 * nesting is bounded, dictionary keys are unique, and nothing may follow
 * the top-level value.  Unsorted dictionary keys are recorded per node
 * (bt_bnode.sorted) so a caller can demand order where the hash depends
 * on it (the info dictionary).
 *
 * Ownership: a struct bt_bdoc owns its nodes; the nodes borrow the input
 * buffer, which must outlive the document.
 * Thread model: pure functions over their arguments.
 */
#ifndef DISKSHELF_BT_BENCODE_H
#define DISKSHELF_BT_BENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BT_BENCODE_MAX_DEPTH 64

enum bt_btype { BT_BSTR, BT_BINT, BT_BLIST, BT_BDICT };

struct bt_bnode
{
  enum bt_btype type;
  const uint8_t *raw;        /* the whole encoded value in the input */
  size_t raw_len;
  const uint8_t *str;        /* BT_BSTR: the string bytes */
  size_t str_len;
  int64_t ival;              /* BT_BINT */
  struct bt_bnode *first;    /* BT_BLIST / BT_BDICT: first child */
  size_t count;              /* BT_BLIST / BT_BDICT: number of children */
  bool sorted;               /* BT_BDICT: keys in strictly ascending order */
  struct bt_bnode *next;     /* next sibling in the parent */
  const uint8_t *key;        /* child of a dict: its key */
  size_t key_len;
};

struct bt_bdoc;

/* Parse len bytes of data.  Returns 0 and sets *doc and *root, or
 * -EINVAL with a message (error_set) naming the offset and the rule
 * broken; -ENOMEM.  The caller frees *doc with bt_bdoc_free. */
int bt_bencode_parse (const uint8_t *data, size_t len,
                      struct bt_bdoc **doc, struct bt_bnode **root);

void bt_bdoc_free (struct bt_bdoc *doc);

/* The value of key in dict (NULL if dict is not a dict or lacks key). */
struct bt_bnode *bt_bdict_get (const struct bt_bnode *dict, const char *key);

/* Like bt_bdict_get, but NULL unless the value has the given type. */
struct bt_bnode *bt_bdict_get_type (const struct bt_bnode *dict,
                                    const char *key, enum bt_btype type);

/* True if node is a string equal to the C string s. */
bool bt_bstr_eq (const struct bt_bnode *node, const char *s);

/* True if every dictionary at or under node has sorted keys. */
bool bt_bnode_all_sorted (const struct bt_bnode *node);

#endif
