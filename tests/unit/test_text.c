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

/* Query secrets of presigned URLs are hidden; other parameters stay. */
static void
test_redact_query (void)
{
  char buf[512];

  text_redact_url ("https://b.s3.amazonaws.com/k.img?X-Amz-Algorithm=AWS4"
                   "&X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abcdef"
                   "&X-Amz-Security-Token=zz&part=3", buf, sizeof buf);
  CHECK (strcmp (buf, "https://b.s3.amazonaws.com/k.img?X-Amz-Algorithm=AWS4"
                 "&X-Amz-Credential=***&X-Amz-Signature=***"
                 "&X-Amz-Security-Token=**&part=3") == 0);
  text_redact_url ("https://u:p@h/x?sig=SECRET;sv=2020&Signature=S#frag",
                   buf, sizeof buf);
  CHECK (strcmp (buf, "https://***@h/x?sig=***;sv=2020&Signature=*#frag")
         == 0);
  text_redact_url ("https://h/x?access_token=T&X-Goog-Signature=G&token",
                   buf, sizeof buf);
  CHECK (strcmp (buf, "https://h/x?access_token=*&X-Goog-Signature=*"
                 "&token") == 0);
  text_redact_url ("https://h/x?#a=b&sig=c", buf, sizeof buf);
  CHECK (strcmp (buf, "https://h/x?#a=b&sig=c") == 0);
  text_redact_url ("https://a@b:c@h/x?k=v", buf, sizeof buf);
  CHECK (strcmp (buf, "https://***@h/x?k=v") == 0);
  /* Short and empty values do not make the result grow. */
  text_redact_url ("https://h/x?sig=&token=ab&key=abcd", buf, sizeof buf);
  CHECK (strcmp (buf, "https://h/x?sig=&token=**&key=***") == 0);
  text_redact_url ("https://@h/x?sig=a", buf, sizeof buf);
  CHECK (strcmp (buf, "https://***@h/x?sig=*") == 0);
  /* Truncation keeps the string terminated and never shows a secret. */
  text_redact_url ("https://h/x?sig=SECRETSECRET", buf, 20);
  CHECK (strlen (buf) == 19 && strstr (buf, "SECRET") == NULL);
}

/* Server text is escaped for logs. */
static void
test_escape (void)
{
  char buf[64];

  CHECK (strcmp (text_escape (buf, sizeof buf, "a\x1b[2J\n\\b", 8),
                 "a\\x1b[2J\\x0a\\x5cb") == 0);
  CHECK (strcmp (text_escape (buf, sizeof buf, "\"e\0t\"", 5),
                 "\"e\\x00t\"") == 0);
  CHECK (strcmp (text_escape (buf, 4, "\x01\x02", 2), "") == 0);
  CHECK (strcmp (text_escape (buf, 5, "\x01\x02", 2), "\\x01") == 0);
  CHECK (strcmp (text_escape (buf, 3, "abcd", 4), "ab") == 0);
  CHECK (strcmp (text_escape (buf, sizeof buf, "\xff", 1), "\\xff") == 0);
}

int
main (void)
{
  test_split_words ();
  test_numbers ();
  test_misc ();
  test_redact_query ();
  test_escape ();
  if (check_failures)
    fprintf (stderr, "%d failure(s)\n", check_failures);
  return check_failures ? 1 : 0;
}
