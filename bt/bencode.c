/* diskshelf bt: the strict bencode parser (see bencode.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bencode.h"
#include "error.h"

/* Nodes live in fixed blocks so that pointers to them stay valid. */
#define NODES_PER_BLOCK 256

struct node_block
{
  struct node_block *next;
  size_t used;
  struct bt_bnode nodes[NODES_PER_BLOCK];
};

struct bt_bdoc
{
  struct node_block *blocks;
};

struct parser
{
  const uint8_t *data;
  size_t len;
  size_t pos;
  struct bt_bdoc *doc;
};

/* A new zeroed node from the document's arena (NULL on ENOMEM). */
static struct bt_bnode *
node_new (struct bt_bdoc *doc)
{
  struct node_block *b = doc->blocks;
  if (b == NULL || b->used == NODES_PER_BLOCK)
    {
      b = calloc (1, sizeof *b);
      if (b == NULL)
        return NULL;
      b->next = doc->blocks;
      doc->blocks = b;
    }
  struct bt_bnode *n = &b->nodes[b->used++];
  memset (n, 0, sizeof *n);
  return n;
}

/* Parse the decimal digits of a string length ending in ':'. */
static int
parse_length (struct parser *p, size_t *out)
{
  size_t start = p->pos;
  uint64_t v = 0;
  while (p->pos < p->len && p->data[p->pos] >= '0' && p->data[p->pos] <= '9')
    {
      if (p->pos - start >= 18)
        return error_set (EINVAL, "bencode: offset %zu: string length too long",
                          start);
      v = v * 10 + (p->data[p->pos] - '0');
      p->pos++;
    }
  if (p->pos == start)
    return error_set (EINVAL, "bencode: offset %zu: expected a value", start);
  if (p->pos - start > 1 && p->data[start] == '0')
    return error_set (EINVAL, "bencode: offset %zu: string length has a "
                      "leading zero", start);
  if (p->pos >= p->len || p->data[p->pos] != ':')
    return error_set (EINVAL, "bencode: offset %zu: expected ':' after a "
                      "string length", p->pos);
  p->pos++;
  if (v > p->len - p->pos)
    return error_set (EINVAL, "bencode: offset %zu: string of %llu bytes runs "
                      "past the end of the input", start,
                      (unsigned long long) v);
  *out = v;
  return 0;
}

/* Parse "i...e" with the one canonical form. */
static int
parse_int (struct parser *p, int64_t *out)
{
  size_t start = p->pos;
  p->pos++;                     /* 'i' */
  bool neg = false;
  if (p->pos < p->len && p->data[p->pos] == '-')
    {
      neg = true;
      p->pos++;
    }
  size_t digits = p->pos;
  uint64_t v = 0;
  while (p->pos < p->len && p->data[p->pos] >= '0' && p->data[p->pos] <= '9')
    {
      unsigned d = p->data[p->pos] - '0';
      if (v > (UINT64_C (9223372036854775807) - d) / 10)
        return error_set (EINVAL, "bencode: offset %zu: integer out of range",
                          start);
      v = v * 10 + d;
      p->pos++;
    }
  size_t ndigits = p->pos - digits;
  if (ndigits == 0)
    return error_set (EINVAL, "bencode: offset %zu: integer without digits",
                      start);
  if (p->pos >= p->len || p->data[p->pos] != 'e')
    return error_set (EINVAL, "bencode: offset %zu: integer not ended by 'e'",
                      start);
  if (ndigits > 1 && p->data[digits] == '0')
    return error_set (EINVAL, "bencode: offset %zu: integer has a leading "
                      "zero", start);
  if (neg && v == 0)
    return error_set (EINVAL, "bencode: offset %zu: integer -0", start);
  p->pos++;
  *out = neg ? -(int64_t) v : (int64_t) v;
  return 0;
}

/* Compare two byte strings as raw bytes (shorter prefix first). */
static int
key_cmp (const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
  int c = memcmp (a, b, alen < blen ? alen : blen);
  if (c != 0)
    return c;
  return alen < blen ? -1 : alen > blen;
}

static int parse_value (struct parser *p, unsigned depth,
                        struct bt_bnode **out);

/* Parse the children of a list or dict up to the closing 'e'. */
static int
parse_container (struct parser *p, unsigned depth, struct bt_bnode *n)
{
  bool dict = n->type == BT_BDICT;
  struct bt_bnode **tail = &n->first;
  const struct bt_bnode *prev = NULL;
  n->sorted = true;
  p->pos++;                     /* 'l' or 'd' */
  for (;;)
    {
      if (p->pos >= p->len)
        return error_set (EINVAL, "bencode: offset %zu: %s not ended by 'e'",
                          (size_t) (n->raw - p->data), dict ? "dict" : "list");
      if (p->data[p->pos] == 'e')
        {
          p->pos++;
          return 0;
        }
      const uint8_t *key = NULL;
      size_t key_len = 0;
      if (dict)
        {
          size_t kpos = p->pos, klen;
          int r = parse_length (p, &klen);
          if (r < 0)
            return error_prefix (EINVAL, "dict key at offset %zu", kpos);
          key = p->data + p->pos;
          key_len = klen;
          p->pos += klen;
          if (prev != NULL)
            {
              int c = key_cmp (prev->key, prev->key_len, key, key_len);
              if (c == 0)
                return error_set (EINVAL, "bencode: offset %zu: duplicate "
                                  "dict key", kpos);
              if (c > 0)
                n->sorted = false;
            }
        }
      struct bt_bnode *child;
      int r = parse_value (p, depth + 1, &child);
      if (r < 0)
        return r;
      child->key = key;
      child->key_len = key_len;
      *tail = child;
      tail = &child->next;
      n->count++;
      prev = child;
    }
}

/* Parse one value at p->pos. */
static int
parse_value (struct parser *p, unsigned depth, struct bt_bnode **out)
{
  if (depth > BT_BENCODE_MAX_DEPTH)
    return error_set (EINVAL, "bencode: offset %zu: nested deeper than %d",
                      p->pos, BT_BENCODE_MAX_DEPTH);
  if (p->pos >= p->len)
    return error_set (EINVAL, "bencode: offset %zu: input ends where a value "
                      "should be", p->pos);
  struct bt_bnode *n = node_new (p->doc);
  if (n == NULL)
    return error_set (ENOMEM, "bencode: out of memory");
  n->raw = p->data + p->pos;
  int r;
  switch (p->data[p->pos])
    {
    case 'i':
      n->type = BT_BINT;
      r = parse_int (p, &n->ival);
      break;
    case 'l':
      n->type = BT_BLIST;
      r = parse_container (p, depth, n);
      break;
    case 'd':
      n->type = BT_BDICT;
      r = parse_container (p, depth, n);
      break;
    default:
      n->type = BT_BSTR;
      r = parse_length (p, &n->str_len);
      if (r == 0)
        {
          n->str = p->data + p->pos;
          p->pos += n->str_len;
        }
      break;
    }
  if (r < 0)
    return r;
  n->raw_len = (size_t) (p->data + p->pos - n->raw);
  *out = n;
  return 0;
}

/* Parse a whole bencoded buffer (see bencode.h). */
int
bt_bencode_parse (const uint8_t *data, size_t len, struct bt_bdoc **doc,
                  struct bt_bnode **root)
{
  struct parser p = { .data = data, .len = len };
  p.doc = calloc (1, sizeof *p.doc);
  if (p.doc == NULL)
    return error_set (ENOMEM, "bencode: out of memory");
  int r = parse_value (&p, 0, root);
  if (r == 0 && p.pos != len)
    r = error_set (EINVAL, "bencode: offset %zu: %zu trailing bytes after "
                   "the value", p.pos, len - p.pos);
  if (r < 0)
    {
      bt_bdoc_free (p.doc);
      return r;
    }
  *doc = p.doc;
  return 0;
}

/* Free a document and all its nodes. */
void
bt_bdoc_free (struct bt_bdoc *doc)
{
  if (doc == NULL)
    return;
  struct node_block *b = doc->blocks;
  while (b != NULL)
    {
      struct node_block *next = b->next;
      free (b);
      b = next;
    }
  free (doc);
}

/* Look a key up in a dict. */
struct bt_bnode *
bt_bdict_get (const struct bt_bnode *dict, const char *key)
{
  if (dict == NULL || dict->type != BT_BDICT)
    return NULL;
  size_t klen = strlen (key);
  for (struct bt_bnode *c = dict->first; c != NULL; c = c->next)
    if (c->key_len == klen && memcmp (c->key, key, klen) == 0)
      return c;
  return NULL;
}

/* Look a key up in a dict, demanding a type. */
struct bt_bnode *
bt_bdict_get_type (const struct bt_bnode *dict, const char *key,
                   enum bt_btype type)
{
  struct bt_bnode *n = bt_bdict_get (dict, key);
  return n != NULL && n->type == type ? n : NULL;
}

/* Compare a string node with a C string. */
bool
bt_bstr_eq (const struct bt_bnode *node, const char *s)
{
  size_t len = strlen (s);
  return node != NULL && node->type == BT_BSTR && node->str_len == len
         && memcmp (node->str, s, len) == 0;
}

/* Check key order recursively (the depth is bounded by the parser). */
bool
bt_bnode_all_sorted (const struct bt_bnode *node)
{
  if (node->type == BT_BDICT && !node->sorted)
    return false;
  if (node->type == BT_BDICT || node->type == BT_BLIST)
    for (const struct bt_bnode *c = node->first; c != NULL; c = c->next)
      if (!bt_bnode_all_sorted (c))
        return false;
  return true;
}
