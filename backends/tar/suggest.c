/* diskshelf: ranking member names by closeness to a name not found.
 *
 * A name scores 0 when it matches ignoring case (whole name or last
 * component), 1 when one contains the other (3 bytes at least), and
 * 2 + the edit distance of the last components otherwise.  Names are compared on at most
 * SUGGEST_MAX_LEN bytes and the distance is cut off as soon as it cannot
 * beat the names already kept, so huge archives stay cheap. */
#include "tar-internal.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

#define SUGGEST_KEEP 5
#define SUGGEST_MAX_LEN 128
/* Shorter names are contained in almost anything: no evidence. */
#define SUGGEST_MIN_SUBSTRING 3

struct tar_suggest
{
  char *wanted;                    /* trimmed copy of the wanted name */
  char *names[SUGGEST_KEEP];       /* best first; owned */
  unsigned scores[SUGGEST_KEEP];
  unsigned kept;
};

/* The part after the last '/' of a trimmed name. */
static const char *
suggest_base (const char *name, size_t len, size_t *base_len)
{
  size_t i = len;

  while (i > 0 && name[i - 1] != '/')
    i--;
  *base_len = len - i;
  return name + i;
}

/* Case-insensitive search for needle in hay, both with lengths. */
static bool
suggest_contains (const char *hay, size_t hay_len, const char *needle,
                  size_t needle_len)
{
  size_t i;

  if (needle_len < SUGGEST_MIN_SUBSTRING || needle_len > hay_len)
    return false;
  for (i = 0; i + needle_len <= hay_len; i++)
    if (strncasecmp (hay + i, needle, needle_len) == 0)
      return true;
  return false;
}

/* Edit distance of a and b ignoring case, or cutoff + 1 when it is
 * more than cutoff. */
static unsigned
suggest_distance (const char *a, size_t alen, const char *b, size_t blen,
                  unsigned cutoff)
{
  unsigned row[SUGGEST_MAX_LEN + 1];
  size_t i, j;

  if (alen > SUGGEST_MAX_LEN)
    alen = SUGGEST_MAX_LEN;
  if (blen > SUGGEST_MAX_LEN)
    blen = SUGGEST_MAX_LEN;
  for (j = 0; j <= blen; j++)
    row[j] = j;
  for (i = 1; i <= alen; i++)
    {
      unsigned diag = row[0], best;

      row[0] = i;
      best = row[0];
      for (j = 1; j <= blen; j++)
        {
          unsigned up = row[j];
          unsigned cost = tolower ((unsigned char) a[i - 1])
            != tolower ((unsigned char) b[j - 1]);
          unsigned v = diag + cost;

          if (up + 1 < v)
            v = up + 1;
          if (row[j - 1] + 1 < v)
            v = row[j - 1] + 1;
          diag = up;
          row[j] = v;
          if (v < best)
            best = v;
        }
      if (best > cutoff)
        return cutoff + 1;
    }
  return row[blen];
}

/* Start a set of suggestions for wanted. */
struct tar_suggest *
tar_suggest_new (const char *wanted)
{
  struct tar_suggest *s = calloc (1, sizeof *s);
  size_t len;
  const char *t;

  if (s == NULL)
    return NULL;
  t = tar_name_trim (wanted, &len);
  s->wanted = strndup (t, len);
  if (s->wanted == NULL)
    {
      free (s);
      return NULL;
    }
  return s;
}

/* Free the set and every name kept. */
void
tar_suggest_free (struct tar_suggest *s)
{
  unsigned i;

  if (s == NULL)
    return;
  for (i = 0; i < s->kept; i++)
    free (s->names[i]);
  free (s->wanted);
  free (s);
}

/* Score name against the wanted one; higher than limit means "no use". */
static unsigned
suggest_score (const struct tar_suggest *s, const char *name, size_t len,
               unsigned limit)
{
  size_t wlen = strlen (s->wanted), wbase_len, base_len;
  const char *wbase = suggest_base (s->wanted, wlen, &wbase_len);
  const char *base = suggest_base (name, len, &base_len);

  if ((len == wlen && strncasecmp (name, s->wanted, len) == 0)
      || (base_len == wbase_len && strncasecmp (base, wbase, base_len) == 0))
    return 0;
  if (suggest_contains (name, len, wbase, wbase_len)
      || suggest_contains (s->wanted, wlen, base, base_len))
    return 1;
  if (limit < 2)
    return limit + 1;
  return 2 + suggest_distance (wbase, wbase_len, base, base_len, limit - 2);
}

/* Keep name when it is among the best few seen. */
void
tar_suggest_add (struct tar_suggest *s, const char *name)
{
  unsigned limit, score, pos, i;
  size_t len;
  const char *t;
  char *copy;

  if (s == NULL || name == NULL)
    return;
  t = tar_name_trim (name, &len);
  if (len == 0)
    return;
  limit = s->kept < SUGGEST_KEEP ? 2 + SUGGEST_MAX_LEN
                                 : s->scores[SUGGEST_KEEP - 1] - 1;
  if (s->kept == SUGGEST_KEEP && s->scores[SUGGEST_KEEP - 1] == 0)
    return;
  score = suggest_score (s, t, len, limit);
  if (score > limit)
    return;
  for (pos = 0; pos < s->kept && s->scores[pos] <= score; pos++)
    ;
  if (pos >= SUGGEST_KEEP)
    return;
  copy = strndup (t, len);
  if (copy == NULL)
    return;
  if (s->kept == SUGGEST_KEEP)
    free (s->names[--s->kept]);
  for (i = s->kept; i > pos; i--)
    {
      s->names[i] = s->names[i - 1];
      s->scores[i] = s->scores[i - 1];
    }
  s->names[pos] = copy;
  s->scores[pos] = score;
  s->kept++;
}

/* Quote the kept names, best first, separated by commas. */
void
tar_suggest_format (const struct tar_suggest *s, char *buf, size_t size)
{
  size_t used = 0;
  unsigned i;

  if (size == 0)
    return;
  buf[0] = '\0';
  if (s == NULL)
    return;
  for (i = 0; i < s->kept && used < size; i++)
    {
      char shown[256];
      int n = snprintf (buf + used, size - used, "%s'%s'", i ? ", " : "",
                        text_escape (shown, sizeof shown, s->names[i],
                                     strlen (s->names[i])));
      if (n < 0)
        break;
      used += (size_t) n;
    }
}
