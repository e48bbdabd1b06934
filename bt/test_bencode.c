/* Unit tests for the strict bencode parser (bt/bencode.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/unit/check.h"
#include "bencode.h"
#include "error.h"

/* Parse a C string; returns the result and frees the document. */
static int
parse_str (const char *s)
{
  struct bt_bdoc *doc = NULL;
  struct bt_bnode *root;
  int r = bt_bencode_parse ((const uint8_t *) s, strlen (s), &doc, &root);
  bt_bdoc_free (doc);
  return r;
}

static void
test_valid (void)
{
  static const char *const good[] = {
    "i0e", "i-1e", "i42e", "i9223372036854775807e", "i-9223372036854775807e",
    "0:", "4:spam", "le", "de", "l4:spami42ee", "d3:cow3:moo4:spam4:eggse",
    "d4:spaml1:a1:bee", "d1:ad1:bd1:cleeee",
  };
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    {
      int r = parse_str (good[i]);
      if (r != 0)
        fprintf (stderr, "%s: %s\n", good[i], error_message ());
      CHECK (r == 0);
    }
}

static void
test_invalid (void)
{
  static const char *const bad[] = {
    "", "i", "ie", "i-e", "i-0e", "i01e", "i00e", "i-01e", "i1", "i+1e",
    "i9223372036854775808e", "i99999999999999999999e", "i1.5e",
    "01:a", "5:abc", "1a", ":", "-1:a", "99999999999999999999:a",
    "l", "li1e", "d", "d1:a", "d1:ai1e", "di1ei2ee", "dle", "d1:ai1e1:ai2ee",
    "i1ei2e", "4:spamx", "le ", "x", "d1:b0:1:b0:e",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    {
      int r = parse_str (bad[i]);
      if (r != -EINVAL)
        fprintf (stderr, "accepted: \"%s\"\n", bad[i]);
      CHECK (r == -EINVAL);
    }
}

static void
test_depth (void)
{
  char buf[2 * (BT_BENCODE_MAX_DEPTH + 2) + 1];
  for (int depth = BT_BENCODE_MAX_DEPTH; depth <= BT_BENCODE_MAX_DEPTH + 1;
       depth++)
    {
      /* depth+1 nested lists: root is depth 0 */
      int n = depth + 1;
      memset (buf, 'l', n);
      memset (buf + n, 'e', n);
      buf[2 * n] = '\0';
      int r = parse_str (buf);
      CHECK (depth == BT_BENCODE_MAX_DEPTH ? r == 0 : r == -EINVAL);
    }
}

static void
test_spans_and_lookup (void)
{
  const char *s = "d8:announce3:url4:infod6:lengthi5e4:name1:xe1:zli-3eee";
  struct bt_bdoc *doc;
  struct bt_bnode *root;
  CHECK (bt_bencode_parse ((const uint8_t *) s, strlen (s), &doc, &root) == 0);
  CHECK (root->type == BT_BDICT && root->count == 3 && root->sorted);
  CHECK (root->raw_len == strlen (s));
  struct bt_bnode *info = bt_bdict_get_type (root, "info", BT_BDICT);
  CHECK (info != NULL);
  CHECK (info->raw_len == strlen ("d6:lengthi5e4:name1:xe"));
  CHECK (memcmp (info->raw, "d6:lengthi5e4:name1:xe", info->raw_len) == 0);
  CHECK (bt_bdict_get_type (info, "length", BT_BINT)->ival == 5);
  CHECK (bt_bstr_eq (bt_bdict_get (info, "name"), "x"));
  CHECK (bt_bdict_get_type (info, "name", BT_BINT) == NULL);
  CHECK (bt_bdict_get (info, "nope") == NULL);
  struct bt_bnode *z = bt_bdict_get_type (root, "z", BT_BLIST);
  CHECK (z != NULL && z->count == 1 && z->first->ival == -3);
  CHECK (bt_bnode_all_sorted (root));
  bt_bdoc_free (doc);

  /* Unsorted keys parse but are flagged. */
  s = "d1:bi1e1:ad1:yi1e1:xi2eee";
  CHECK (bt_bencode_parse ((const uint8_t *) s, strlen (s), &doc, &root) == 0);
  CHECK (!root->sorted);
  CHECK (!bt_bnode_all_sorted (bt_bdict_get (root, "a")));
  bt_bdoc_free (doc);
}

static void
test_big_list (void)
{
  /* More nodes than one arena block. */
  size_t n = 5000;
  char *s = malloc (2 + 3 * n);
  s[0] = 'l';
  for (size_t i = 0; i < n; i++)
    memcpy (s + 1 + 3 * i, "i7e", 3);
  s[1 + 3 * n] = 'e';
  struct bt_bdoc *doc;
  struct bt_bnode *root;
  CHECK (bt_bencode_parse ((uint8_t *) s, 2 + 3 * n, &doc, &root) == 0);
  CHECK (root->count == n);
  size_t sum = 0;
  for (struct bt_bnode *c = root->first; c != NULL; c = c->next)
    sum += c->ival;
  CHECK (sum == 7 * n);
  bt_bdoc_free (doc);
  free (s);
}

int
main (void)
{
  test_valid ();
  test_invalid ();
  test_depth ();
  test_spans_and_lookup ();
  test_big_list ();
  if (check_failures == 0)
    printf ("bencode: all checks passed\n");
  return check_failures != 0;
}
