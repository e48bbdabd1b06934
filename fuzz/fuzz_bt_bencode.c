/* Fuzz harness: bt/bencode.c's strict parser, then a walk over the tree
 * (lookups, the sorted-keys check) as the metainfo code does it. */
#include <stdint.h>
#include <stdlib.h>

#include "bt/bencode.h"

/* Touch every node so that a bad pointer or span shows up. */
static size_t
walk (const struct bt_bnode *n)
{
  size_t sum = n->raw_len + (n->raw_len ? n->raw[n->raw_len - 1] : 0);
  if (n->type == BT_BSTR && n->str_len > 0)
    sum += n->str[0] + n->str[n->str_len - 1];
  for (const struct bt_bnode *c = n->first; c != NULL; c = c->next)
    sum += walk (c) + c->key_len;
  return sum;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct bt_bdoc *doc;
  struct bt_bnode *root;
  if (bt_bencode_parse (data, size, &doc, &root) == 0)
    {
      volatile size_t sink = walk (root);
      (void) sink;
      (void) bt_bnode_all_sorted (root);
      (void) bt_bdict_get (root, "info");
      (void) bt_bstr_eq (bt_bdict_get (root, "a"), "b");
      bt_bdoc_free (doc);
    }
  return 0;
}
