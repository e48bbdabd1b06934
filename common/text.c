/* diskshelf: text helpers (trimming, strict numbers, word splitting,
 * edit distance, URL redaction). */
#include "text.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Strip white space at both ends, in place. */
char *
text_trim (char *s)
{
  char *end;

  while (isspace ((unsigned char) *s))
    s++;
  end = s + strlen (s);
  while (end > s && isspace ((unsigned char) end[-1]))
    *--end = '\0';
  return s;
}

/* Strict unsigned decimal. */
int
text_parse_uint (const char *s, uint64_t *out)
{
  uint64_t value = 0;

  if (*s == '\0')
    return -EINVAL;
  for (; *s; s++)
    {
      if (!isdigit ((unsigned char) *s))
        return -EINVAL;
      if (value > (UINT64_MAX - (uint64_t) (*s - '0')) / 10)
        return -ERANGE;
      value = value * 10 + (uint64_t) (*s - '0');
    }
  *out = value;
  return 0;
}

/* Free a NULL-ended word array. */
static void
free_words (char **words, size_t n)
{
  for (size_t i = 0; i < n; i++)
    free (words[i]);
  free (words);
}

/* Shell-like word splitting without expansion. */
int
text_split_words (const char *line, char ***out)
{
  size_t n = 0, cap = 4;
  char **words = calloc (cap + 1, sizeof *words);
  char *word = malloc (strlen (line) + 1);
  const char *p = line;

  if (words == NULL || word == NULL)
    {
      free (words);
      free (word);
      return -ENOMEM;
    }
  for (;;)
    {
      size_t len = 0;
      char quote = 0;
      bool have = false;

      while (isspace ((unsigned char) *p))
        p++;
      if (*p == '\0')
        break;
      while (*p && (quote || !isspace ((unsigned char) *p)))
        {
          have = true;
          if (quote == 0 && (*p == '\'' || *p == '"'))
            quote = *p++;
          else if (quote && *p == quote)
            {
              quote = 0;
              p++;
            }
          else if (*p == '\\' && quote != '\'' && p[1])
            {
              word[len++] = p[1];
              p += 2;
            }
          else
            word[len++] = *p++;
        }
      if (quote)
        {
          free (word);
          free_words (words, n);
          return -EINVAL;
        }
      if (!have)
        break;
      word[len] = '\0';
      if (n == cap)
        {
          char **grown = realloc (words, (cap * 2 + 1) * sizeof *words);
          if (grown == NULL)
            {
              free (word);
              free_words (words, n);
              return -ENOMEM;
            }
          words = grown;
          cap *= 2;
        }
      words[n] = strdup (word);
      if (words[n] == NULL)
        {
          free (word);
          free_words (words, n);
          return -ENOMEM;
        }
      words[++n] = NULL;
    }
  free (word);
  words[n] = NULL;
  *out = words;
  return (int) n;
}

/* Levenshtein distance with two rows, capped at 255. */
unsigned
text_edit_distance (const char *a, const char *b)
{
  size_t la = strlen (a), lb = strlen (b);
  unsigned *prev, *cur, result;

  if (la > 255 || lb > 255)
    return 255;
  prev = malloc ((lb + 1) * sizeof *prev);
  cur = malloc ((lb + 1) * sizeof *cur);
  if (prev == NULL || cur == NULL)
    {
      free (prev);
      free (cur);
      return 255;
    }
  for (size_t j = 0; j <= lb; j++)
    prev[j] = (unsigned) j;
  for (size_t i = 1; i <= la; i++)
    {
      cur[0] = (unsigned) i;
      for (size_t j = 1; j <= lb; j++)
        {
          unsigned cost = a[i - 1] == b[j - 1] ? 0 : 1;
          unsigned best = prev[j - 1] + cost;
          if (prev[j] + 1 < best)
            best = prev[j] + 1;
          if (cur[j - 1] + 1 < best)
            best = cur[j - 1] + 1;
          cur[j] = best;
        }
      unsigned *t = prev;
      prev = cur;
      cur = t;
    }
  result = prev[lb];
  free (prev);
  free (cur);
  return result > 255 ? 255 : result;
}

/* A bounded output buffer, always NUL-terminated. */
struct text_out
{
  char *buf;
  size_t size, len;
};

/* Append n bytes, dropping what does not fit. */
static void
out_put (struct text_out *o, const char *s, size_t n)
{
  while (n-- > 0 && o->len + 1 < o->size)
    o->buf[o->len++] = *s++;
  o->buf[o->len] = '\0';
}

/* True when a query parameter of this name usually carries a secret:
 * presigned-URL signatures (X-Amz-Signature, X-Goog-Signature, Azure's
 * sig), tokens, keys, passwords. */
static bool
secret_param (const char *name, size_t n)
{
  static const char *const exact[] = { "sig", "key", "auth", "pass", "pwd" };
  static const char *const part[] = {
    "signature", "token", "secret", "passw", "credential", "apikey",
    "api_key", "api-key", "accesskey", "access_key" };
  char lower[64];

  if (n == 0 || n >= sizeof lower)
    return n >= sizeof lower;       /* an absurdly long name: hide it */
  for (size_t i = 0; i < n; i++)
    lower[i] = (char) tolower ((unsigned char) name[i]);
  lower[n] = '\0';
  for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
    if (strcmp (lower, exact[i]) == 0)
      return true;
  for (size_t i = 0; i < sizeof part / sizeof part[0]; i++)
    if (strstr (lower, part[i]))
      return true;
  return false;
}

/* Replace the userinfo of a URL, and the values of secret-looking query
 * parameters, by "***". */
void
text_redact_url (const char *url, char *buf, size_t size)
{
  struct text_out o = { buf, size, 0 };
  const char *scheme_end = strstr (url, "://");
  const char *host, *at, *p;

  if (size == 0)
    return;
  buf[0] = '\0';
  if (scheme_end == NULL)
    {
      out_put (&o, url, strlen (url));
      return;
    }
  host = scheme_end + 3;
  p = host + strcspn (host, "/?#");
  at = memrchr (host, '@', (size_t) (p - host));
  if (at == NULL)
    out_put (&o, url, (size_t) (p - url));
  else
    {
      out_put (&o, url, (size_t) (host - url));
      out_put (&o, "***", 3);
      out_put (&o, at, (size_t) (p - at));
    }
  /* The path, then the query parameter by parameter. */
  {
    size_t n = strcspn (p, "?#");
    out_put (&o, p, n);
    p += n;
  }
  if (*p == '?')
    {
      out_put (&o, p++, 1);
      while (*p && *p != '#')
        {
          size_t n = strcspn (p, "&;#");
          size_t name = strcspn (p, "=&;#");

          if (name < n && secret_param (p, name))
            {
              /* "***", or as many stars as a shorter value has: the
               * result never grows here (callers size by the input). */
              size_t value = n - name - 1;
              out_put (&o, p, name + 1);
              out_put (&o, "***", value < 3 ? value : 3);
            }
          else
            out_put (&o, p, n);
          p += n;
          if (*p == '&' || *p == ';')
            out_put (&o, p++, 1);
        }
    }
  out_put (&o, p, strlen (p));
}

/* Copy n bytes of untrusted text into dst, writing every byte outside
 * printable ASCII, and the backslash, as \xNN. */
char *
text_escape (char *dst, size_t dstlen, const char *src, size_t n)
{
  static const char hex[] = "0123456789abcdef";
  size_t j = 0;

  if (dstlen == 0)
    return dst;
  for (size_t i = 0; i < n; i++)
    {
      unsigned char ch = (unsigned char) src[i];

      if (ch >= 0x20 && ch < 0x7f && ch != '\\')
        {
          if (j + 1 >= dstlen)
            break;
          dst[j++] = (char) ch;
        }
      else
        {
          if (j + 4 >= dstlen)
            break;
          dst[j++] = '\\';
          dst[j++] = 'x';
          dst[j++] = hex[ch >> 4];
          dst[j++] = hex[ch & 15];
        }
    }
  dst[j] = '\0';
  return dst;
}

/* A redacted copy of a URL, sized for text_redact_url's growth. */
char *
text_redacted_copy (const char *url)
{
  size_t size = strlen (url) + sizeof "***";
  char *out = malloc (size);

  if (out)
    text_redact_url (url, out, size);
  return out;
}
