/* Unit tests of common/text.c and the size/seconds parsers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"
#include "text.h"

#include "check.h"

/* Word splitting: quotes, escapes, errors. */
static void
test_split_words (void)
{
  char **w;
  int n = text_split_words ("  qemu-nbd -f qcow2 'a b' \"c\\\"d\" e\\ f ", &w);

  CHECK (n == 6);
  CHECK (strcmp (w[0], "qemu-nbd") == 0);
  CHECK (strcmp (w[3], "a b") == 0);
  CHECK (strcmp (w[4], "c\"d") == 0);
  CHECK (strcmp (w[5], "e f") == 0);
  CHECK (w[6] == NULL);
  for (int i = 0; i < n; i++)
    free (w[i]);
  free (w);
  CHECK (text_split_words ("a 'b", &w) == -EINVAL);
  CHECK (text_split_words ("   ", &w) == 0 && w[0] == NULL);
  free (w);
}

/* Strict numbers and sizes. */
static void
test_numbers (void)
{
  uint64_t v;
  double s;

  CHECK (text_parse_uint ("42", &v) == 0 && v == 42);
  CHECK (text_parse_uint ("", &v) == -EINVAL);
  CHECK (text_parse_uint ("-1", &v) == -EINVAL);
  CHECK (text_parse_uint ("12x", &v) == -EINVAL);
  CHECK (text_parse_uint ("99999999999999999999999", &v) == -ERANGE);
  CHECK (parse_size ("4K", &v) == 0 && v == 4096);
  CHECK (parse_size ("1.5G", &v) == 0 && v == 1536ULL << 20);
  CHECK (parse_size ("10GiB", &v) == 0 && v == 10ULL << 30);
  CHECK (parse_size ("512", &v) == 0 && v == 512);
  CHECK (parse_size ("12Q", &v) == -EINVAL);
  CHECK (parse_size ("G", &v) == -EINVAL);
  CHECK (parse_size ("-1M", &v) == -EINVAL);
  CHECK (parse_seconds ("2.5", &s) == 0 && s == 2.5);
  CHECK (parse_seconds ("soon", &s) == -EINVAL);
  CHECK (parse_seconds ("nan", &s) == -EINVAL);
}

/* Edit distance and URL redaction. */
static void
test_misc (void)
{
  char buf[256];

  CHECK (text_edit_distance ("sorce", "source") == 1);
  CHECK (text_edit_distance ("", "abc") == 3);
  text_redact_url ("https://bob:secret@host/x?y", buf, sizeof buf);
  CHECK (strcmp (buf, "https://***@host/x?y") == 0);
  text_redact_url ("http://host/a@b", buf, sizeof buf);
  CHECK (strcmp (buf, "http://host/a@b") == 0);
  text_redact_url ("/plain/path", buf, sizeof buf);
  CHECK (strcmp (buf, "/plain/path") == 0);
}

int
main (void)
{
  test_split_words ();
  test_numbers ();
  test_misc ();
  if (check_failures)
    fprintf (stderr, "%d failure(s)\n", check_failures);
  return check_failures ? 1 : 0;
}
