/* Pieces of the hot path in C, each with a Python twin that does the same where this is not built
   (detector/native.py builds it with the compiled modules; `make setup`).

   make(cls, *fields) -> cls: a named tuple from its fields in order, exactly as tuple.__new__(cls,
   fields) makes it (model.make). Every sign-in makes one or two (a Visit, an AccountState): through
   tuple.__new__, a compiled caller paid 1,100 to 1,800 instructions for each, here about 200. Left
   untracked by the cyclic garbage collector when no field is, or may become, a tracked container (see
   untrack_if_settled), as are what make_slotted and decode_canonical make.

   decode_canonical(raws, max_bytes, max_user_chars, max_field_chars, max_depth, signin_type)
       -> list[SignIn | None]: the common canonical sign-in line (codec.decode_batch calls it first).
   A replay spends most of its decoding on lines of one shape: a JSON object whose values are plain
   strings (or, in fields the detector does not use, short numbers, true, false, null, or objects and
   arrays of those and of plain strings, the line within max_depth as decode_batch counts it), with a
   dotted-quad address (or an IPv6 one written as normalise_ip writes it), and a timestamp
   `YYYY-MM-DDTHH:MM:SS[.f]` (a fraction of up to 12 digits, past 6 dropped) ending in `Z` or
   `+HH:MM`, or epoch seconds or milliseconds as a number. For each such line it gives the very
   `SignIn` that `codec.decode_batch` gives, without building the parsed object (but a line without an
   event id gets None there, and decode_batch derives the id, as decode_event does), and for every
   other line it gives None: the Python decoder then takes the line and decides (so what is valid, and
   every reason for a reject, stays defined in one place, codec.py). It never accepts what the Python
   decoder would refuse: anything it is not sure of (an escape, a control character, a number in a
   field it uses other than the time, a long number, a value nested more than 16 deep, a repeated
   field, a lower-case `t`, more than twelve fractional digits, an address that is neither a plain
   dotted quad nor IPv6 as normalised, a value that is all white space) is None.
   tests/unit/test_codec.py holds the two equal.

   plain_stamp(text) -> float | None: codec.parse_timestamp of a timestamp of the shape decode_canonical
   takes, by the same read_stamp; None for any other (a vendor's adapter parses one for every record).

   make_slotted(cls, slots, *values): a slotted object, each slot set (model.new_location: a Location
   for every place GeoIP meets cost 15,000 instructions through the slots' Python-level __set__).

   tree_find(...): a MaxMind DB search tree walked for many IPv4 addresses (geoip.SearchTree.find,
   whose numpy walk is its twin: 32 numpy steps over a batch cost about 7,000 instructions an address).
   tree_locate(...): a batch's new addresses, IPv4 and IPv6, as text: parsed, checked against the
   special-purpose ranges, walked down the tree and their records found in the record index
   (geoip.SearchTree.locate_text; its twin takes IPv4 only, and a new IPv6 address cost a database
   read of about 23 us). The walks go in lockstep, GROUP at a time (see walk_group): each step of a
   walk is a cache miss, and one at a time they cost 2 us an address, in lockstep 1 us.

   advance_run(...): runs of a replay batch's common sign-ins, decided as engine.Engine.process's loop
   decides them (its body is the twin): an account's first sign-in, a re-delivery, and the rule's quick
   path (rules.advance: newer than the account's others, from its last address or not even possibly too
   fast), new states made in C; every other sign-in is left to the loop. Compiled by mypyc, that loop
   and the rule's functions were a third of a replay worker's time, much of it generic tuple access,
   reference counting and calls; most of what is left is memory (the account's state, met again): so
   each sign-in's account state is fetched toward the cache a few sign-ins ahead (prefetch_signin).

   get_each(dict, keys, default): each key's value, and where those missing are (the address cache's
   lookups in geoip.GeoIP.locate_many), each lookup's cache misses fetched a few keys ahead.

   pack_state(user, state) -> bytes | None: statecodec.pack for the common state (every visit located
   by GeoIP, no remembered alert), byte for byte; None for any other, and for anything it is not sure of
   (statecodec._pack, the twin, writes those). Over 10^6 accounts the store packs most of them, and
   packing in Python was over a third of a replay worker's time.

   place_key(latitude, longitude, country, city): model.place_key, the Location.place of every place
   GeoIP meets (its f-string, interpreted, costs 1.5 us a place, compiled by mypyc 2.5 us; here 1.0, and 0.25 for
   ASCII names).

   pack_signins(events, n) -> ([(blob, special) | None] * n, [places] * n) and unpack_signins(blob, special,
   signin_type) -> list[SignIn]: a replay batch shared out among n worker processes (parallel.py), each
   account always to the worker its str hash names, each worker's sign-ins as one bytes object (as
   columns of strings, split, pickled and rebuilt, the bench slice's batches took 0.23 s of CPU, about
   6% of the replay's; packed, 0.13 s). A sign-in with a vendor location, a proxy flag or a text that
   UTF-8 cannot hold (a lone surrogate) goes whole in ``special``, by its place in the share. ``places``:
   where each of a share's sign-ins is in the batch (int32s), to put the shares' alerts in batch order.

   index_locations(...): the Location of each of a batch's new places, read from the record index's
   columns (geoip.GeoIP._locations; its twin, RecordIndex.fields and GeoIP._location, took 2-3 us a
   place, an item of a memoryview and a Python call at a time: 24,000 places in a worker's share of the
   benchmark slice).

   geodesic_km(lat1, lon1, lat2, lon2) -> float: geographiclib's Inverse distance, operation for operation
   (geo.geodesic_km: its Python took 50-90 us a candidate pair, 7% of a replay worker's time).

   select_signins(events, evaluate_failures, newest): Engine.process's first loop over a batch (the sign-ins
   to evaluate, their users and addresses), where no network is trusted.

   count_into(counter, items): counter.update(items) for a batch's outcomes, counted by identity.

   utc_text(epoch_s) -> str | None: model.utc_text for instants from 1970 to 9999 (None for the others,
   which the twin writes). An alert writes six (its times, the database's build, the explanation's), and
   the twin's arithmetic and f-strings took 1.4-2 us each: nearly a fifth of an alert's cost.

   int32_max(buffer) -> int: the largest of a buffer of native int32 (-1 when empty), for the record
   index's check when it is opened (geoindex.RecordIndex.load: its twin, max() over a memoryview, took
   50 ms of every start over GeoLite2-City's 510,481 records).
*/
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <structmember.h>
#include <arpa/inet.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

/* codec.MIN_TIME and codec.MAX_TIME, in microseconds (1990-01-01 and 2100-01-01, UTC). */
#define MIN_MICROS 631152000000000LL
#define MAX_MICROS 4102444800000000LL

typedef struct {
    const char *start;
    Py_ssize_t len;
    int present; /* 0 absent, 1 a string, 2 null, 3 a boolean or a nested value, 4 a number */
    int ascii;   /* every byte below 0x80 */
} Span;

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* p past JSON white space. */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

/* The length of the literal true, false or null at p (its first letter says which), else 0. */
static size_t literal(const char *p, const char *end)
{
    static const char *const literals[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(literals[k]);
        if ((size_t)(end - p) >= n && memcmp(p, literals[k], n) == 0)
            return n;
    }
    return 0;
}

/* What a byte is inside a JSON string: plain ASCII, the closing quote, one this decoder leaves to the
   Python one (a backslash, a control character), or the start or part of a character beyond ASCII. */
enum { PLAIN, QUOTE, REFUSED, HIGH };
static unsigned char kinds[256];

/* Each byte's value as a lower-case hex digit, -1 for any other (init_kinds fills it). */
static signed char hex_digit[256];

static void init_kinds(void)
{
    for (int c = 0; c < 256; c++)
        kinds[c] = c < 0x20 || c == '\\' ? REFUSED : c == '"' ? QUOTE : c >= 0x80 ? HIGH : PLAIN;
    for (int c = 0; c < 256; c++)
        hex_digit[c] = (signed char)(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1);
}

/* A JSON string without escapes or control characters, from the opening quote at *p; 0 on any other. */
static inline int read_string(const char **p, const char *end, Span *out)
{
    const unsigned char *s = (const unsigned char *)*p + 1, *q = s, *stop = (const unsigned char *)end;
    int ascii = 1;
#ifdef __SSE2__
    /* Sixteen bytes at a time where the machine has SSE2 (every x86-64): a quote, a backslash, or a
       byte below 0x20 as a signed char (a control character, or one beyond ASCII) ends the run. */
    const __m128i quote16 = _mm_set1_epi8('"'), slash16 = _mm_set1_epi8('\\'), space16 = _mm_set1_epi8(0x20);
    while (stop - q >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)q);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote16), _mm_cmpeq_epi8(v, slash16)),
                                   _mm_cmplt_epi8(v, space16));
        int mask = _mm_movemask_epi8(hit);
        if (mask) {
            q += __builtin_ctz((unsigned)mask);
            goto bytes;
        }
        q += 16;
    }
#endif
    /* Eight plain bytes at a time (none a quote, a backslash, a control character or beyond ASCII),
       where a byte at a time took most of a line's 2,000 instructions of scanning. */
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (stop - q >= 8) {
        uint64_t w;
        memcpy(&w, q, 8);
        uint64_t quote = w ^ (ones * '"'), slash = w ^ (ones * '\\');
        uint64_t special = (((quote - ones) & ~quote) | ((slash - ones) & ~slash) | (w - ones * 0x20) | w) & highs;
        if (special) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* the first byte flagged is not plain (a borrow flags only the bytes above it) */
            q += __builtin_ctzll(special) >> 3;
#endif
            break; /* (the loop below decides what it is) */
        }
        q += 8;
    }
#ifdef __SSE2__
bytes:
#endif
    for (;; q++) {
        if (q >= stop)
            return 0;
        unsigned char kind = kinds[*q];
        if (kind == PLAIN)
            continue;
        if (kind == QUOTE)
            break;
        if (kind == REFUSED)
            return 0;
        ascii = 0;
    }
    out->start = (const char *)s;
    out->len = q - s;
    out->present = 1;
    out->ascii = ascii;
    *p = (const char *)q + 1;
    return 1;
}

static inline int digits(const char *s, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *value = v;
    return 1;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 29;
    return days[m - 1];
}

/* The timestamp as epoch microseconds, when it has the plain shape and is a real instant within
   1990-2099; 0 otherwise (the Python decoder then decides). */
static int read_stamp(const Span *ts, int64_t *micros)
{
    const char *s = ts->start;
    Py_ssize_t n = ts->len;
    int offset_s = 0;
    if (n >= 20 && s[n - 1] == 'Z') {
        n -= 1;
    }
    else if (n >= 25 && s[n - 3] == ':' && (s[n - 6] == '+' || s[n - 6] == '-')) {
        int hh, mm;
        if (!digits(s + n - 5, 2, &hh) || !digits(s + n - 2, 2, &mm) || hh > 23 || mm > 59)
            return 0;
        offset_s = (hh * 3600 + mm * 60) * (s[n - 6] == '+' ? 1 : -1);
        n -= 6;
    }
    else {
        return 0;
    }
    int year, month, day, hour, minute, second, fraction = 0;
    if (n < 19 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
        return 0;
    /* The day of the last stamp read, kept: a log's lines come day by day (under the GIL, one caller
       at a time). With its date checked and counted from 1970 each time, and the digits read through a
       call, a stamp took 310 instructions; now 168. */
    static char last_date[10];
    static int64_t last_days = INT64_MIN;
    int64_t days;
    if (last_days != INT64_MIN && memcmp(s, last_date, 10) == 0)
        days = last_days;
    else {
        if (!digits(s, 4, &year) || !digits(s + 5, 2, &month) || !digits(s + 8, 2, &day) || month < 1 ||
            month > 12 || day < 1 || day > days_in_month(year, month))
            return 0;
        days = last_days = days_from_civil(year, month, day);
        memcpy(last_date, s, 10);
    }
    if (!digits(s + 11, 2, &hour) || !digits(s + 14, 2, &minute) || !digits(s + 17, 2, &second))
        return 0;
    if (n > 19) { /* a fraction of one to twelve digits, those past six dropped (as fromisoformat) */
        int k = (int)(n - 20), kept = k < 6 ? k : 6, dropped;
        if (s[19] != '.' || k < 1 || k > 12 || !digits(s + 20, kept, &fraction) ||
            (k > 6 && !digits(s + 26, k - 6, &dropped)))
            return 0;
        for (; kept < 6; kept++)
            fraction *= 10;
    }
    if (hour > 23 || minute > 59 || second > 59)
        return 0;
    int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second;
    int64_t value = (seconds - offset_s) * 1000000 + fraction;
    if (value < MIN_MICROS || value >= MAX_MICROS)
        return 0;
    *micros = value;
    return 1;
}

/* A text field as str: within 1..limit characters and not all white space; NULL (no error set)
   when it is not sure. */
/* A str of ASCII bytes, copied straight in (PyUnicode_FromStringAndSize decodes them as UTF-8 first). */
static PyObject *ascii_text(const char *s, Py_ssize_t n)
{
    PyObject *out = PyUnicode_New(n, 127);
    if (out != NULL)
        memcpy(PyUnicode_DATA(out), s, n);
    return out;
}

static PyObject *text(const Span *f, Py_ssize_t limit)
{
    if (f->len == 0)
        return NULL;
    int visible = 0; /* an ASCII character that is not white space: then str.isspace() is False */
    for (Py_ssize_t i = 0; i < f->len; i++) {
        unsigned char c = (unsigned char)f->start[i];
        if (c < 0x80 && c != ' ') {
            visible = 1;
            break;
        }
    }
    if (!visible)
        return NULL;
    PyObject *value = f->ascii ? ascii_text(f->start, f->len) : PyUnicode_DecodeUTF8(f->start, f->len, "strict");
    if (value == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(value) > limit) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

/* A JSON number at *p that orjson takes, as the JSON grammar has it (-?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?),
   of at most 32 characters and an exponent of at most two digits, so that it is finite as a double
   (orjson refuses one that is not); *p moves past it. Anything else: 0 (the Python decoder's). */
#define MAX_NUMBER 32
static int skip_number(const char **p, const char *end)
{
    const char *q = *p, *start = *p;
    if (q < end && *q == '-')
        q++;
    if (q < end && *q == '0')
        q++;
    else if (q < end && *q >= '1' && *q <= '9')
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    else
        return 0;
    if (q < end && *q == '.') {
        q++;
        if (q >= end || *q < '0' || *q > '9')
            return 0;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < end && (*q == '+' || *q == '-'))
            q++;
        const char *digits = q;
        while (q < end && *q >= '0' && *q <= '9')
            q++;
        if (q == digits || q - digits > 2)
            return 0;
    }
    if (q - start > MAX_NUMBER)
        return 0;
    *p = q;
    return 1;
}

#define SIGNIN_FIELDS 7

/* A SignIn of plain fields (no vendor location, no proxy flag), left untracked by the cyclic garbage
   collector (strings, a float, booleans, None: nothing it need walk). It takes the three texts over,
   also when it fails: a NULL among them is an error already raised (out of memory). */
static PyObject *plain_signin(PyTypeObject *signin, PyObject *user, PyObject *ip, double time,
                              PyObject *event_id, int success)
{
    PyObject *t = user != NULL && ip != NULL && event_id != NULL ? PyFloat_FromDouble(time) : NULL;
    PyObject *row = t != NULL ? signin->tp_alloc(signin, SIGNIN_FIELDS) : NULL;
    if (row == NULL) {
        Py_XDECREF(user);
        Py_XDECREF(ip);
        Py_XDECREF(event_id);
        Py_XDECREF(t);
        return NULL;
    }
    PyTuple_SET_ITEM(row, 0, user);
    PyTuple_SET_ITEM(row, 1, ip);
    PyTuple_SET_ITEM(row, 2, t);
    PyTuple_SET_ITEM(row, 3, event_id);
    PyTuple_SET_ITEM(row, 4, Py_NewRef(success ? Py_True : Py_False));
    PyTuple_SET_ITEM(row, 5, Py_NewRef(Py_None));
    PyTuple_SET_ITEM(row, 6, Py_NewRef(Py_False));
    PyObject_GC_UnTrack(row);
    return row;
}

#define MAX_NESTED 16

/* An IPv6 address as Python's ipaddress writes it (3.11: lower-case hexadecets without leading zeros,
   the longest run of two or more zero ones, the first of equals, as "::"), into out; its length. -1
   for an IPv4-mapped one, which normalise_ip writes as the IPv4 address. */
static int ipv6_text(const unsigned char b[16], char *out)
{
    unsigned int h[8];
    for (int i = 0; i < 8; i++)
        h[i] = (unsigned int)b[2 * i] << 8 | b[2 * i + 1];
    if (!h[0] && !h[1] && !h[2] && !h[3] && !h[4] && h[5] == 0xffff)
        return -1;
    int best = -1, best_len = 0, start = -1, len = 0;
    for (int i = 0; i < 8; i++) {
        if (h[i] == 0) {
            if (start < 0)
                start = i;
            if (++len > best_len) {
                best = start;
                best_len = len;
            }
        }
        else {
            start = -1;
            len = 0;
        }
    }
    if (best_len < 2)
        best = -1;
    /* As _compress_hextets does: the parts, the run as one empty part (and one more at either end),
       joined by ':'. */
    int parts[10], count = 0; /* a hexadecet, or -1 for an empty part */
    if (best == 0)
        parts[count++] = -1;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            parts[count++] = -1;
            i += best_len - 1;
            if (i == 7)
                parts[count++] = -1;
        }
        else {
            parts[count++] = (int)h[i];
        }
    }
    int n = 0;
    for (int k = 0; k < count; k++) {
        if (k > 0)
            out[n++] = ':';
        if (parts[k] >= 0)
            n += sprintf(out + n, "%x", (unsigned int)parts[k]);
    }
    out[n] = '\0';
    return n;
}

/* A string's text is UTF-8 as CPython's strict decoder has it (as orjson has it too: no surrogate, no
   overlong form, nothing past U+10FFFF), for a text the detector does not use. */
static int utf8(const Span *text)
{
    if (text->ascii)
        return 1;
    PyObject *decoded = PyUnicode_DecodeUTF8(text->start, text->len, "strict");
    if (decoded == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(decoded);
    return 1;
}

/* The UTF-8 of a str (its size in *n), or NULL (not a str, or a lone surrogate: the error cleared). */
static const char *text_of(PyObject *obj, Py_ssize_t *n)
{
    const char *raw = PyUnicode_Check(obj) ? PyUnicode_AsUTF8AndSize(obj, n) : NULL;
    if (raw == NULL)
        PyErr_Clear();
    return raw;
}

/* inet_pton(AF_INET) as glibc's inet_pton4 reads a text: four decimal numbers of at most 255, without
   a leading zero, joined by dots; nothing else. (glibc's, through a NUL-terminated copy, took 7% of
   decoding a line.) */
static int dotted_quad(const char *s, Py_ssize_t n, unsigned char *out)
{
    const char *end = s + n;
    for (int k = 0; k < 4; k++) {
        if (k > 0 && (s >= end || *s++ != '.'))
            return 0;
        if (s >= end || *s < '0' || *s > '9')
            return 0;
        unsigned value = (unsigned)(*s++ - '0');
        for (; s < end && *s >= '0' && *s <= '9'; s++) {
            if (value == 0)
                return 0; /* a leading zero */
            value = value * 10 + (unsigned)(*s - '0');
            if (value > 255)
                return 0;
        }
        out[k] = (unsigned char)value;
    }
    return s == end;
}

/* inet_pton of a counted text into out: 1 when taken, 0 when not (no text with a NUL in it, or longer
   than any address is written, is). */
static int address_of(const char *text, Py_ssize_t n, int family, unsigned char *out)
{
    if (family == AF_INET)
        return dotted_quad(text, n, out);
    char terminated[INET6_ADDRSTRLEN];
    if (n >= (Py_ssize_t)sizeof(terminated) || memchr(text, '\0', n) != NULL)
        return 0;
    memcpy(terminated, text, n);
    terminated[n] = '\0';
    return inet_pton(family, terminated, out) == 1;
}

static int skip_nested(const char **p, const char *end, int depth);

/* A value inside a nested one: a plain string (no escape, no control character, UTF-8: utf8), a
   number (skip_number), true, false, null, or an object or array of those. */
static int skip_value(const char **p, const char *end, int depth)
{
    if (*p >= end)
        return 0;
    if (**p == '"') {
        Span text;
        return read_string(p, end, &text) && utf8(&text);
    }
    if (**p == '{' || **p == '[')
        return skip_nested(p, end, depth + 1);
    size_t n = literal(*p, end);
    if (n > 0) {
        *p += n;
        return 1;
    }
    return skip_number(p, end);
}

/* An object or an array at *p (a field the detector does not use) that orjson takes, of the values
   skip_value takes, at most MAX_NESTED deep; *p moves past it. Anything else: 0. */
static int skip_nested(const char **p, const char *end, int depth)
{
    if (depth > MAX_NESTED)
        return 0;
    char close = **p == '{' ? '}' : ']';
    int object = close == '}';
    (*p)++;
    *p = skip_ws(*p, end);
    if (*p < end && **p == close) {
        (*p)++;
        return 1;
    }
    for (;;) {
        *p = skip_ws(*p, end);
        if (object) {
            Span key;
            if (*p >= end || **p != '"' || !read_string(p, end, &key) || !utf8(&key))
                return 0;
            *p = skip_ws(*p, end);
            if (*p >= end || **p != ':')
                return 0;
            (*p)++;
            *p = skip_ws(*p, end);
        }
        if (!skip_value(p, end, depth))
            return 0;
        *p = skip_ws(*p, end);
        if (*p < end && **p == ',') {
            (*p)++;
            continue;
        }
        if (*p < end && **p == close) {
            (*p)++;
            return 1;
        }
        return 0;
    }
}

static PyObject *decode_line(const char *p, Py_ssize_t size, Py_ssize_t max_user, Py_ssize_t max_field,
                             Py_ssize_t max_depth, PyTypeObject *signin)
{
    const char *line = p;
    int nested = 0;
    const char *end = p + size;
    Span user = {0}, ip = {0}, ts = {0}, eid = {0}, outcome = {0};
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p++;
    for (;;) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"')
            return NULL; /* (an empty object has no user: the Python decoder says so) */
        Span key;
        if (!read_string(&p, end, &key) || !utf8(&key))
            return NULL; /* (a key that is not UTF-8: the Python decoder says so) */
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return NULL;
        p++;
        p = skip_ws(p, end);
        Span value = {0};
        size_t n;
        if (p < end && *p == '"') {
            if (!read_string(&p, end, &value))
                return NULL;
        }
        else if ((n = literal(p, end)) > 0) {
            value.present = *p == 'n' ? 2 : 3;
            p += n;
        }
        else if (value.start = p, skip_number(&p, end)) {
            value.present = 4;
            value.len = p - value.start;
            value.ascii = 1;
        }
        else if (p < end && (*p == '{' || *p == '[')) {
            if (!skip_nested(&p, end, 1))
                return NULL;
            value.present = 3;
            nested = 1;
        }
        else {
            return NULL; /* anything else: the Python decoder's */
        }
        Span *slot = NULL;
        if (key.len == 4 && memcmp(key.start, "user", 4) == 0)
            slot = &user;
        else if (key.len == 2 && memcmp(key.start, "ip", 2) == 0)
            slot = &ip;
        else if (key.len == 9 && memcmp(key.start, "timestamp", 9) == 0)
            slot = &ts;
        else if (key.len == 8 && memcmp(key.start, "event_id", 8) == 0)
            slot = &eid;
        else if (key.len == 7 && memcmp(key.start, "outcome", 7) == 0)
            slot = &outcome;
        if (slot != NULL) {
            if (slot->present || value.present == 3 || (value.present == 4 && slot != &ts))
                return NULL; /* a field given twice; a boolean, a nested value, or a number but as the time */
            *slot = value;
        }
        else if (value.present == 1 && !utf8(&value)) {
            return NULL; /* (not UTF-8: the Python decoder says so) */
        }
        p = skip_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}') {
            p++;
            break;
        }
        return NULL;
    }
    p = skip_ws(p, end);
    if (p != end)
        return NULL;
    if (nested) { /* as codec.decode_batch measures a record that is not flat: its brackets, all of them */
        Py_ssize_t brackets = 0;
        for (const char *q = line; q < end; q++)
            brackets += *q == '{' || *q == '[';
        if (brackets > max_depth)
            return NULL;
    }
    if (user.present != 1 || ip.present != 1 || (ts.present != 1 && ts.present != 4) || !ip.ascii ||
        !ts.ascii)
        return NULL; /* (no event id, or a null one: its SignIn has None there, for decode_batch) */
    int success = 1;
    if (outcome.present == 1) {
        if (outcome.len == 7 && memcmp(outcome.start, "success", 7) == 0)
            success = 1;
        else if (outcome.len == 7 && memcmp(outcome.start, "failure", 7) == 0)
            success = 0;
        else
            return NULL;
    }
    /* A dotted quad that inet_pton takes, as socket.inet_pton does for codec.normalise_ip; or an IPv6
       address already written as normalise_ip writes it (str of ipaddress's IPv6Address). */
    unsigned char packed[16];
    if (ip.len < 2 || ip.len > 39)
        return NULL;
    if (memchr(ip.start, ':', ip.len) == NULL) {
        if (ip.len < 7 || ip.len > 15 || !address_of(ip.start, ip.len, AF_INET, packed))
            return NULL;
    }
    else {
        char normal[48];
        if (!address_of(ip.start, ip.len, AF_INET6, packed) || ipv6_text(packed, normal) != ip.len ||
            memcmp(normal, ip.start, ip.len) != 0)
            return NULL;
    }
    double seconds;
    if (ts.present == 4) {
        /* Epoch seconds, or milliseconds from 1e11 on: codec.parse_timestamp's float(value), read by
           CPython's own correctly rounded parser (as orjson reads a JSON number, or float() an int). */
        char number[MAX_NUMBER + 1];
        memcpy(number, ts.start, ts.len);
        number[ts.len] = '\0';
        seconds = PyOS_string_to_double(number, NULL, NULL);
        if (seconds == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
        if (fabs(seconds) >= 1e11)
            seconds /= 1000.0;
        if (!(seconds >= MIN_MICROS / 1e6 && seconds < MAX_MICROS / 1e6))
            return NULL; /* (the Python decoder says why) */
    }
    else {
        int64_t micros;
        if (!read_stamp(&ts, &micros))
            return NULL;
        seconds = (double)micros / 1e6; /* as numpy's micros / 1e6 */
    }

    PyObject *u = text(&user, max_user);
    if (u == NULL)
        return NULL;
    PyObject *e = eid.present == 1 ? text(&eid, max_field) : Py_NewRef(Py_None);
    if (e == NULL) {
        Py_DECREF(u);
        return NULL;
    }
    /* (NULL here is out of memory: the caller sees the error) */
    return plain_signin(signin, u, ascii_text(ip.start, ip.len), seconds, e, success);
}

/* plain_stamp(text) -> float | None: codec.parse_timestamp of a timestamp of the shape decode_canonical
   takes (read_stamp), as epoch seconds; None for any other text, which parse_timestamp then decides. */
static PyObject *plain_stamp(PyObject *self, PyObject *text)
{
    Py_ssize_t n;
    const char *s = PyUnicode_Check(text) ? PyUnicode_AsUTF8AndSize(text, &n) : NULL;
    if (s == NULL) {
        PyErr_Clear(); /* (not a str, or one with a lone surrogate: not this shape) */
        Py_RETURN_NONE;
    }
    Span ts = {s, n, 1, 1};
    int64_t micros;
    if (!read_stamp(&ts, &micros))
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)micros / 1e6);
}

static PyObject *decode_canonical(PyObject *self, PyObject *args)
{
    PyObject *raws;
    Py_ssize_t max_bytes, max_user, max_field, max_depth;
    PyTypeObject *signin;
    if (!PyArg_ParseTuple(args, "O!nnnnO!", &PyList_Type, &raws, &max_bytes, &max_user, &max_field,
                          &max_depth, &PyType_Type, &signin))
        return NULL;
    if (!PyType_IsSubtype(signin, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "signin_type must be a tuple type");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(raws);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *raw = PyList_GET_ITEM(raws, i);
        PyObject *row = NULL;
        if (PyBytes_Check(raw) && PyBytes_GET_SIZE(raw) <= max_bytes) {
            row = decode_line(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), max_user, max_field, max_depth,
                              signin);
            if (row == NULL && PyErr_Occurred()) {
                Py_DECREF(out);
                return NULL;
            }
        }
        PyList_SET_ITEM(out, i, row != NULL ? row : Py_NewRef(Py_None));
    }
    return out;
}

/* Walks through a MaxMind DB search tree, GROUP of them in lockstep: a walk is a chain of dependent
   reads that mostly miss the cache (the tree is tens of MiB), so one at a time each waits for memory at
   every step; taken a step each in turn, with the next node prefetched, their waits overlap. */
#define GROUP 16

typedef struct {
    unsigned char address[16];
    int bits;       /* the address's: 32 or 128 */
    int64_t node;   /* where the walk is; at the end, the record's data-section offset, or -1 */
    int64_t place;  /* the record's row in the record index, NO_POINT (-1), ABSENT (-2) */
    Py_ssize_t at;  /* the entry it answers */
} Walk;

/* Each walk from its ``node``, a bit of its address (most significant first) a step, to its record's
   offset, or -1 where it has none (the walk ends at the node count, or is still inside the tree after
   the last bit). 0, or -1 with IndexError set when a node lies past the end of the tree. */
static int walk_group(const Py_buffer *tree, Py_ssize_t node_count, Py_ssize_t record_size, Walk *w,
                      int count)
{
    const unsigned char *base = tree->buf;
    Py_ssize_t node_bytes = record_size / 4;
    for (int bit = 0, active = count; active > 0; bit++) {
        active = 0;
        for (int k = 0; k < count; k++) {
            int64_t node = w[k].node;
            if (bit >= w[k].bits || node >= node_count)
                continue;
            if ((node + 1) * node_bytes > tree->len) {
                PyErr_SetString(PyExc_IndexError, "a GeoIP search tree node past the end of the file");
                return -1;
            }
            const unsigned char *p = base + node * node_bytes;
            int right = (w[k].address[bit / 8] >> (7 - bit % 8)) & 1;
            if (record_size == 24) {
                p += 3 * right;
                node = (int64_t)p[0] << 16 | p[1] << 8 | p[2];
            }
            else if (record_size == 28) {
                int64_t high = right ? (p[3] & 0x0F) : (p[3] >> 4);
                p += 4 * right;
                node = high << 24 | (int64_t)p[0] << 16 | p[1] << 8 | p[2];
            }
            else {
                p += 4 * right;
                node = (int64_t)p[0] << 24 | (int64_t)p[1] << 16 | p[2] << 8 | p[3];
            }
            w[k].node = node;
            if (bit + 1 < w[k].bits && node < node_count) {
                __builtin_prefetch(base + node * node_bytes);
                active++;
            }
        }
    }
    for (int k = 0; k < count; k++)
        w[k].node = w[k].node > node_count ? w[k].node - node_count - 16 : -1;
    return 0;
}

/* Each found record's row in the record index (``offsets`` sorted, ``places`` the row of each): a
   binary search each, in lockstep as the walks; ABSENT (-2) where the index does not hold it. */
static void index_group(const Py_buffer *offsets, const Py_buffer *places, Walk *w, int count)
{
    const int64_t *o = offsets->buf;
    const int32_t *p = places->buf;
    Py_ssize_t n = offsets->len / (Py_ssize_t)sizeof(int64_t), lo[GROUP], hi[GROUP];
    for (int k = 0; k < count; k++) {
        lo[k] = 0;
        hi[k] = w[k].node >= 0 ? n : 0;
    }
    for (int active = count; active > 0;) {
        active = 0;
        for (int k = 0; k < count; k++) {
            if (lo[k] >= hi[k])
                continue;
            Py_ssize_t mid = lo[k] + (hi[k] - lo[k]) / 2;
            if (o[mid] < w[k].node)
                lo[k] = mid + 1;
            else
                hi[k] = mid;
            if (lo[k] < hi[k]) {
                __builtin_prefetch(o + lo[k] + (hi[k] - lo[k]) / 2);
                active++;
            }
        }
    }
    for (int k = 0; k < count; k++)
        w[k].place = w[k].node >= 0 && lo[k] < n && o[lo[k]] == w[k].node ? p[lo[k]] : -2;
}

static int record_size_ok(Py_ssize_t record_size)
{
    if (record_size == 24 || record_size == 28 || record_size == 32)
        return 1;
    PyErr_SetString(PyExc_ValueError, "a GeoIP search tree's record size is 24, 28 or 32");
    return 0;
}

/* tree_find(tree, addresses, node_count, record_size, ipv4_start) -> bytearray of int64: for each
   address (4 bytes, big-endian, one after another) the data-section offset of its record, or -1 when
   it has none. */
static PyObject *tree_find(PyObject *self, PyObject *args)
{
    Py_buffer tree, addresses;
    Py_ssize_t node_count, record_size, start;
    if (!PyArg_ParseTuple(args, "y*y*nnn", &tree, &addresses, &node_count, &record_size, &start))
        return NULL;
    PyObject *out = NULL;
    if (!record_size_ok(record_size))
        goto done;
    if (addresses.len % 4 != 0) {
        PyErr_SetString(PyExc_ValueError, "tree_find: 4 bytes an address");
        goto done;
    }
    Py_ssize_t n = addresses.len / 4;
    out = PyByteArray_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (out == NULL)
        goto done;
    const unsigned char *in = addresses.buf;
    int64_t *found = (int64_t *)PyByteArray_AS_STRING(out);
    Walk w[GROUP];
    for (Py_ssize_t i = 0; i < n; i += GROUP) {
        int count = n - i < GROUP ? (int)(n - i) : GROUP;
        for (int k = 0; k < count; k++) {
            memcpy(w[k].address, in + 4 * (i + k), 4);
            w[k].bits = 32;
            w[k].node = start;
        }
        if (walk_group(&tree, node_count, record_size, w, count) < 0) {
            Py_CLEAR(out);
            goto done;
        }
        for (int k = 0; k < count; k++)
            found[i + k] = w[k].node;
    }
done:
    PyBuffer_Release(&tree);
    PyBuffer_Release(&addresses);
    return out;
}

/* Whether ``address`` (``size`` bytes) lies in one of the networks of ``table``: entries of ``size``
   bytes of network address and one of prefix length. */
static int in_networks(const unsigned char *address, int size, const Py_buffer *table)
{
    const unsigned char *t = table->buf;
    for (Py_ssize_t at = 0; at + size + 1 <= table->len; at += size + 1) {
        int plen = t[at + size], whole = plen / 8, rest = plen % 8;
        if (memcmp(address, t + at, whole) != 0)
            continue;
        if (rest == 0 || ((address[whole] ^ t[at + whole]) & (0xFF << (8 - rest)) & 0xFF) == 0)
            return 1;
    }
    return 0;
}

/* tree_locate(ips, tree, node_count, record_size, ipv4_start, ip_version, special4, special6,
   index_offsets, index_places) -> (offsets, places), two bytearrays of int64, an entry an address.
   offsets: its record's data-section offset, or UNKNOWN (-1) no record, SPECIAL (-2) in a network of
   special4 / special6 (entries of 4 / 16 bytes of network and one of prefix length), LEFT (-3) not
   taken here: not a str, not a plain IPv4 or IPv6 address by inet_pton (a zone id, say), or IPv6 in an
   IPv4-only database. places: the record's row in the index (index_offsets sorted, index_places the
   row of each; both empty without an index), NO_POINT (-1), or ABSENT (-2) not in the index. */
static PyObject *tree_locate(PyObject *self, PyObject *args)
{
    PyObject *ips;
    Py_buffer tree, special4, special6, index_offsets, index_places;
    Py_ssize_t node_count, record_size, ipv4_start, ip_version;
    if (!PyArg_ParseTuple(args, "O!y*nnnny*y*y*y*", &PyList_Type, &ips, &tree, &node_count, &record_size,
                          &ipv4_start, &ip_version, &special4, &special6, &index_offsets, &index_places))
        return NULL;
    PyObject *offsets = NULL, *places = NULL, *out = NULL;
    if (!record_size_ok(record_size))
        goto done;
    if (index_offsets.len / (Py_ssize_t)sizeof(int64_t) != index_places.len / (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "tree_locate: an index place for each index offset");
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(ips);
    offsets = PyByteArray_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    places = PyByteArray_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(int64_t));
    if (offsets == NULL || places == NULL)
        goto done;
    int64_t *found = (int64_t *)PyByteArray_AS_STRING(offsets);
    int64_t *row = (int64_t *)PyByteArray_AS_STRING(places);
    Walk w[GROUP];
    int count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t size;
        const char *text = text_of(PyList_GET_ITEM(ips, i), &size);
        found[i] = -3;
        row[i] = -2;
        if (text != NULL) {
            int v6 = memchr(text, ':', size) != NULL;
            Walk *next = &w[count];
            if (address_of(text, size, v6 ? AF_INET6 : AF_INET, next->address) && (!v6 || ip_version == 6)) {
                if (in_networks(next->address, v6 ? 16 : 4, v6 ? &special6 : &special4))
                    found[i] = -2;
                else {
                    next->bits = v6 ? 128 : 32;
                    next->node = v6 ? 0 : ipv4_start;
                    next->at = i;
                    count++;
                }
            }
        }
        if (count == GROUP || (i == n - 1 && count > 0)) {
            if (walk_group(&tree, node_count, record_size, w, count) < 0)
                goto done;
            index_group(&index_offsets, &index_places, w, count);
            for (int k = 0; k < count; k++) {
                found[w[k].at] = w[k].node;
                row[w[k].at] = w[k].place;
            }
            count = 0;
        }
    }
    out = PyTuple_Pack(2, offsets, places);
done:
    Py_XDECREF(offsets);
    Py_XDECREF(places);
    PyBuffer_Release(&tree);
    PyBuffer_Release(&special4);
    PyBuffer_Release(&special6);
    PyBuffer_Release(&index_offsets);
    PyBuffer_Release(&index_places);
    return out;
}

/* Whether ``v`` is, or may become, a container the cyclic garbage collector walks: a dict it does not
   track now is tracked again once it holds a container, so a dict always counts. */
static int may_be_tracked(PyObject *v)
{
    return PyObject_IS_GC(v) && (PyDict_Check(v) || PyObject_GC_IsTracked(v));
}

/* Whether the collector may skip ``v`` for good. A tracked plain tuple of such values is untracked here
   first (what the collector itself does to a tuple when it first meets it: CPython's
   _PyTuple_MaybeUntrack, which likewise counts any container but a tuple as tracked). */
static int settled(PyObject *v)
{
    if (!may_be_tracked(v))
        return 1;
    if (!PyTuple_CheckExact(v))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v); i++)
        if (may_be_tracked(PyTuple_GET_ITEM(v, i)))
            return 0;
    PyObject_GC_UnTrack(v);
    return 1;
}

/* Untrack ``obj`` (just made, immutable) when none of its ``n`` values can lead back to it: the
   collector would do so for a tuple at its first pass, after walking it (and whatever it holds) once
   in each young generation; the state of every account is such tuples (and Locations), millions of
   them over a replay. */
static void untrack_if_settled(PyObject *obj, PyObject *const *values, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (!settled(values[i]))
            return;
    PyObject_GC_UnTrack(obj);
}

/* ``tuple``'s first ``n`` (at most 4) values replaced in place by ``values`` (references taken over;
   the old ones let go), tracked by the collector or not as ``make`` would leave a tuple made anew of
   its values.
   Only for a tuple that nothing else can see: one whose only holder is its caller, or a dict no other
   code reads while it changes (see advance_run). */
static void renew(PyObject *tuple, PyObject *const *values, Py_ssize_t n)
{
    PyObject *olds[4];
    for (Py_ssize_t i = 0; i < n; i++) {
        olds[i] = PyTuple_GET_ITEM(tuple, i);
        PyTuple_SET_ITEM(tuple, i, values[i]);
    }
    int tracked = PyObject_GC_IsTracked(tuple), all_settled = 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple) && all_settled; i++)
        all_settled = settled(PyTuple_GET_ITEM(tuple, i));
    if (all_settled && tracked)
        PyObject_GC_UnTrack(tuple);
    else if (!all_settled && !tracked)
        PyObject_GC_Track(tuple);
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(olds[i]);
}

static PyObject *make(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "make(cls, *fields): cls must be a tuple type");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    PyObject *row = type->tp_alloc(type, nargs - 1); /* as tuple.__new__ does for a subclass */
    if (row == NULL)
        return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++)
        PyTuple_SET_ITEM(row, i - 1, Py_NewRef(args[i]));
    untrack_if_settled(row, args + 1, nargs - 1);
    return row;
}

/* make_slotted(cls, slots, *values): object.__new__(cls), then each slot descriptor's __set__ with its
   value, as model._make_slotted does in Python (here a C call each, there a Python call each). */
static PyObject *no_args;        /* () for object.__new__ */
static PyObject *question_mark;  /* "?": place_key's country when there is none */
static PyObject *empty_text;     /* "" */
static PyObject *empty_tuple;    /* () */

static PyObject *make_slotted(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || !PyType_Check(args[0]) || !PyTuple_Check(args[1]) ||
        PyTuple_GET_SIZE(args[1]) != nargs - 2) {
        PyErr_SetString(PyExc_TypeError, "make_slotted(cls, slots, *values): a value for each slot");
        return NULL;
    }
    PyObject *obj = PyBaseObject_Type.tp_new((PyTypeObject *)args[0], no_args, NULL);
    if (obj == NULL)
        return NULL;
    for (Py_ssize_t i = 2; i < nargs; i++) {
        PyObject *slot = PyTuple_GET_ITEM(args[1], i - 2);
        if (Py_IS_TYPE(slot, &PyMemberDescr_Type)) {
            /* A slot of the object's class, as __slots__ makes it: stored in place, as its __set__
               (PyMember_SetOne) would store it in the new object, without the call and its checks
               (13 of them a Location: half the instructions of making a place's Location). */
            PyMemberDescrObject *member = (PyMemberDescrObject *)slot;
            PyMemberDef *def = member->d_member;
            if (def->type == T_OBJECT_EX && !(def->flags & READONLY) && Py_TYPE(obj) == member->d_common.d_type) {
                PyObject **at = (PyObject **)((char *)obj + def->offset);
                Py_XSETREF(*at, Py_NewRef(args[i]));
                continue;
            }
        }
        descrsetfunc set = Py_TYPE(slot)->tp_descr_set;
        if (set == NULL) {
            PyErr_SetString(PyExc_TypeError, "make_slotted: not a slot descriptor");
            Py_DECREF(obj);
            return NULL;
        }
        if (set(slot, obj, args[i]) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    /* (Only for frozen classes, whose slots are never set again: model.new_location) */
    if (PyObject_IS_GC(obj))
        untrack_if_settled(obj, args + 2, nargs - 2);
    return obj;
}

/* model.place_key: "country|city|lat,lon", the country "?" and the city "" when there is none, the
   centre to a degree in CPython's own float formatting (as format(x, ".0f") gives it). */
/* ``format(x, ".0f")`` as an integer, for a finite x of under 10^9 (the nearest integer, ties to even,
   as Python's correctly rounded formatting; its sign, for a result of 0, is the caller's: "-0"). */
static int whole_degrees(double x, long *out)
{
    if (!(fabs(x) < 1e9))
        return 0;
    *out = (long)nearbyint(x);
    return 1;
}

/* ``whole_degrees``'s integer in decimal at ``to`` (at most 11 characters: under 10^9, signed); "-0"
   for a negative x that rounds to 0. Returns the length. (snprintf took 1,400 instructions a place.) */
static int put_degrees(char *to, long v, int negative)
{
    char digits[12];
    int n = 0, m = 0;
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do
        digits[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0 || negative)
        to[m++] = '-';
    while (n > 0)
        to[m++] = digits[--n];
    return m;
}

static PyObject *place_key(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "place_key(latitude, longitude, country, city)");
        return NULL;
    }
    double latitude = PyFloat_AsDouble(args[0]), longitude = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *country = args[2], *city = args[3];
    int has_country = country != Py_None ? PyObject_IsTrue(country) : 0;
    int has_city = city != Py_None ? PyObject_IsTrue(city) : 0;
    if (has_country < 0 || has_city < 0)
        return NULL;
    PyObject *first = has_country ? country : question_mark, *second = has_city ? city : empty_text;
    long lat_degrees, lon_degrees;
    if (PyUnicode_CheckExact(first) && PyUnicode_IS_ASCII(first) && PyUnicode_CheckExact(second) &&
        PyUnicode_IS_ASCII(second) && whole_degrees(latitude, &lat_degrees) &&
        whole_degrees(longitude, &lon_degrees)) {
        /* The common case without PyUnicode_FromFormat and PyOS_double_to_string (3,800 instructions a
           place, 21% of a replay worker's GeoIP): ASCII names, and the centre's whole degrees printed as
           integers. */
        char degrees[32];
        int m = 0;
        degrees[m++] = '|';
        m += put_degrees(degrees + m, lat_degrees, signbit(latitude));
        degrees[m++] = ',';
        m += put_degrees(degrees + m, lon_degrees, signbit(longitude));
        Py_ssize_t a = PyUnicode_GET_LENGTH(first), b = PyUnicode_GET_LENGTH(second);
        PyObject *out = PyUnicode_New(a + 1 + b + m, 127);
        if (out == NULL)
            return NULL;
        char *to = (char *)PyUnicode_DATA(out);
        memcpy(to, PyUnicode_DATA(first), a);
        to[a] = '|';
        memcpy(to + a + 1, PyUnicode_DATA(second), b);
        memcpy(to + a + 1 + b, degrees, m);
        return out;
    }
    char *lat = PyOS_double_to_string(latitude, 'f', 0, 0, NULL);
    char *lon = PyOS_double_to_string(longitude, 'f', 0, 0, NULL);
    PyObject *out = NULL;
    if (lat != NULL && lon != NULL)
        out = PyUnicode_FromFormat("%S|%S|%s,%s", has_country ? country : question_mark,
                                   has_city ? city : empty_text, lat, lon);
    PyMem_Free(lat);
    PyMem_Free(lon);
    return out;
}


/* advance_run: the common sign-ins of a batch (engine.Engine.process), the rule's quick path in C. */
static PyObject *outcome_first, *outcome_duplicate, *outcome_same_ip, *outcome_plausible,
    *outcome_failure_checked;
static PyObject *name_latitude, *name_longitude, *name_radius, *name_place;

/* ``a == b`` for two texts (event ids, addresses), without the generic comparison; -1 when either is
   not an exact str (the caller leaves the sign-in to Python). */
static inline int same_text(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (!PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b))
        return -1;
    if (PyUnicode_GET_LENGTH(a) != PyUnicode_GET_LENGTH(b) || PyUnicode_KIND(a) != PyUnicode_KIND(b))
        return 0;
    size_t size = (size_t)PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a);
    const char *x = PyUnicode_DATA(a), *y = PyUnicode_DATA(b);
    uint64_t u, v; /* (the first 8 bytes here: two event ids of one length mostly differ there, and a
                      duplicate check compares up to 24 of them a sign-in) */
    if (size >= 8 && (memcpy(&u, x, 8), memcpy(&v, y, 8), u != v))
        return 0;
    return memcmp(x, y, size) == 0;
}

/* Where each of a few attributes (interned names) of one type lives, when it is a slot (a member
   descriptor of an object): a Location's coordinates, radius and place, read for most sign-ins. */
typedef struct {
    PyObject *name;
    PyTypeObject *type; /* (a strong reference) */
    Py_ssize_t offset;
} SlotAt;
static SlotAt slot_at[8];

/* ``getattr(obj, name)``: a slot of an object's exact type read in place, as its member descriptor
   would (PyObject_GetAttr's lookup through the type took 4% of a replay worker's instructions). */
static PyObject *attr(PyObject *obj, PyObject *name)
{
    PyTypeObject *type = Py_TYPE(obj);
    for (int i = 0; i < 8; i++) {
        SlotAt *at = &slot_at[i];
        if (at->name == name && at->type == type) {
            PyObject *v = *(PyObject **)((char *)obj + at->offset);
            if (v != NULL)
                return Py_NewRef(v);
            break; /* an unset slot: the descriptor's own error */
        }
        if (at->name == NULL) { /* learn this name's slot in this type, when it is one */
            PyObject *descr = _PyType_Lookup(type, name);
            if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX) {
                at->name = name;
                at->type = (PyTypeObject *)Py_NewRef(type);
                at->offset = ((PyMemberDescrObject *)descr)->d_member->offset;
                return attr(obj, name);
            }
            break;
        }
    }
    return PyObject_GetAttr(obj, name);
}

static int float_attr(PyObject *obj, PyObject *name, double *out)
{
    PyObject *v = attr(obj, name);
    if (v == NULL)
        return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* geo.haversine_km on a sphere of ``radius`` km, operation for operation (CPython's math module is this
   libm; ** is pow). */
static double haversine(double lat1, double lon1, double lat2, double lon2, double radius)
{
    const double to_radians = 3.14159265358979323846 / 180.0; /* (math.radians: x * (pi / 180)) */
    double p1 = lat1 * to_radians, p2 = lat2 * to_radians;
    double dphi = p2 - p1, dlmb = (lon2 - lon1) * to_radians;
    double a = pow(sin(dphi / 2), 2.0) + cos(p1) * cos(p2) * pow(sin(dlmb / 2), 2.0);
    double root = sqrt(a);
    return 2 * radius * asin(root < 1.0 ? root : 1.0);
}

/* rules.could_be_impossible of the account's last visit (its location ``la``, time ``ta``) and a new
   sign-in: 1, 0, or -1 with an exception set. */
static int could_be_impossible(PyObject *la, double ta, PyObject *lb, double tb, const double *policy)
{
    if (la == lb)
        return 0;
    double lat1, lon1, r1, lat2, lon2, r2;
    if (float_attr(la, name_latitude, &lat1) < 0 || float_attr(la, name_longitude, &lon1) < 0 ||
        float_attr(la, name_radius, &r1) < 0 || float_attr(lb, name_latitude, &lat2) < 0 ||
        float_attr(lb, name_longitude, &lon2) < 0 || float_attr(lb, name_radius, &r2) < 0)
        return -1;
    double upper = haversine(lat1, lon1, lat2, lon2, policy[7]) * policy[4];
    double net = upper - r1 - r2, elapsed = fabs(tb - ta);
    if (!(net >= policy[1]))
        return 0;
    double speed = net <= 0.0 ? 0.0 : (elapsed <= 0.0 ? INFINITY : net / (elapsed / 3600.0));
    return speed > policy[0];
}

/* rules._append: the history with a visit newer than all of it. */
static PyObject *append_visit(PyObject *history, PyObject *visit, double t, const double *policy)
{
    Py_ssize_t n = PyTuple_GET_SIZE(history) + 1, raw_tail = (Py_ssize_t)policy[5];
    PyObject **visits = PyMem_Malloc(n * sizeof(PyObject *));
    if (visits == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n - 1; i++)
        visits[i] = PyTuple_GET_ITEM(history, i);
    visits[n - 1] = visit;
    PyObject *out = NULL;
    Py_ssize_t j = n - raw_tail - 1;
    if (j > 0) { /* the middle of a run of three at one place, just out of the raw tail, goes */
        PyObject *places[3] = {NULL, NULL, NULL};
        int same = 0;
        for (int k = 0; k < 3; k++) {
            PyObject *location = PyTuple_GET_ITEM(visits[j - 1 + k], 3);
            places[k] = attr(location, name_place);
            if (places[k] == NULL)
                goto places_done;
        }
        same = PyObject_RichCompareBool(places[0], places[1], Py_EQ);
        if (same == 1)
            same = PyObject_RichCompareBool(places[1], places[2], Py_EQ);
    places_done:
        for (int k = 0; k < 3; k++)
            Py_XDECREF(places[k]);
        if (places[2] == NULL || same < 0)
            goto done;
        if (same) {
            memmove(visits + j, visits + j + 1, (n - j - 1) * sizeof(PyObject *));
            n--;
        }
    }
    double oldest = t - policy[3], first;
    if ((first = PyFloat_AsDouble(PyTuple_GET_ITEM(visits[0], 2))) == -1.0 && PyErr_Occurred())
        goto done;
    if (first < oldest) {
        Py_ssize_t kept = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            double when = PyFloat_AsDouble(PyTuple_GET_ITEM(visits[i], 2));
            if (when == -1.0 && PyErr_Occurred())
                goto done;
            if (when >= oldest)
                visits[kept++] = visits[i];
        }
        n = kept;
    }
    Py_ssize_t size = (Py_ssize_t)policy[2], from = n > size ? n - size : 0;
    out = PyTuple_New(n - from);
    if (out != NULL)
        for (Py_ssize_t i = from; i < n; i++)
            PyTuple_SET_ITEM(out, i - from, Py_NewRef(visits[i]));
done:
    PyMem_Free(visits);
    return out;
}

/* rules._with_id: the recent ids with one more, the newest ``limit`` of them. */
static PyObject *with_id(PyObject *ids, PyObject *event_id, Py_ssize_t limit)
{
    Py_ssize_t n = PyTuple_GET_SIZE(ids) + 1, from = n > limit ? n - limit : 0;
    PyObject *out = PyTuple_New(n - from);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = from; i < n - 1; i++)
        PyTuple_SET_ITEM(out, i - from, Py_NewRef(PyTuple_GET_ITEM(ids, i)));
    PyTuple_SET_ITEM(out, n - 1 - from, Py_NewRef(event_id));
    return out;
}

static int is_tuple_of(PyObject *v, Py_ssize_t n) { return PyTuple_Check(v) && PyTuple_GET_SIZE(v) >= n; }

/* Looking a key up in a big dict (a replay's account states, its addresses met before: about 10^5 entries
   each) is three cache misses one after the other: the hash table's slot, the entry it names, then the
   key and value objects. dict_prefetch takes one of these steps for a key whose lookup is a few
   sign-ins ahead, so that it finds them cached: step 0 fetches the slot, step 1 (once step 0 is done)
   the entry, step 2 the key and value objects, and returns the value (borrowed; NULL when there is
   none, or it is not there yet) for the caller to fetch what it will read of it. Only fetches: no
   answer depends on it. It reads CPython 3.11's dict layout (Include/internal/pycore_dict.h: the
   header below, the slots, then the entries), and with another version does nothing. Only the first
   slot of the key's probe is fetched (most lookups end there). */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
typedef struct {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size, dk_log2_index_bytes, dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable, dk_nentries;
    char dk_indices[];
} DictKeys311;
#define DICT_KEYS_GENERAL_311 0 /* entries of hash, key, value; else of key, value */
#endif

static PyObject *dict_prefetch(PyObject *dict, PyObject *key, int step)
{
#ifdef DICT_KEYS_GENERAL_311
    if (!PyUnicode_CheckExact(key) || ((PyDictObject *)dict)->ma_values != NULL) /* (a split table) */
        return NULL;
    Py_hash_t hash = ((PyASCIIObject *)key)->hash;
    if (hash == -1) {
        if (step != 0)
            return NULL;
        hash = PyObject_Hash(key); /* (a str's: cached in it, as the lookup would) */
    }
    const DictKeys311 *dk = (const DictKeys311 *)((PyDictObject *)dict)->ma_keys;
    int width = dk->dk_log2_index_bytes - dk->dk_log2_size; /* log2 of a slot's bytes */
    const char *slot = dk->dk_indices + (((size_t)hash & (((size_t)1 << dk->dk_log2_size) - 1)) << width);
    if (step == 0) {
        __builtin_prefetch(slot);
        return NULL;
    }
    Py_ssize_t ix = width == 0 ? *(const int8_t *)slot : width == 1 ? *(const int16_t *)slot
                  : width == 2 ? *(const int32_t *)slot : *(const int64_t *)slot;
    if (ix < 0 || ix >= dk->dk_nentries)
        return NULL;
    const char *entries = dk->dk_indices + ((size_t)1 << dk->dk_log2_index_bytes);
    PyObject *const *entry = dk->dk_kind == DICT_KEYS_GENERAL_311
                                 ? (PyObject *const *)(entries + ix * 3 * sizeof(PyObject *)) + 1
                                 : (PyObject *const *)(entries + ix * 2 * sizeof(PyObject *));
    if (step == 1) {
        __builtin_prefetch(entry);
        return NULL;
    }
    if (entry[0] != NULL) { /* (a str's text follows its header: with an address's, past 64 bytes) */
        __builtin_prefetch(entry[0]);
        __builtin_prefetch((const char *)entry[0] + 64);
    }
    if (entry[1] != NULL)
        __builtin_prefetch(entry[1]);
    return entry[1];
#else
    (void)dict, (void)key, (void)step;
    return NULL;
#endif
}

/* An account's state a step nearer the cache, each step once the one before it is done: the state
   (step 0), its visits and recent ids (1), each visit and id (2: an id's text spans two lines), each
   visit's fields (3). For advance_run's sign-ins, and pack_states' idle accounts (one long out of use:
   every object of its state a cache miss). */
static void prefetch_state(PyObject *state, int step)
{
    if (step == 0) {
        __builtin_prefetch(state);
        return;
    }
    if (!is_tuple_of(state, 2))
        return;
    PyObject *visits = PyTuple_GET_ITEM(state, 0), *ids = PyTuple_GET_ITEM(state, 1);
    if (step == 1) {
        __builtin_prefetch(visits);
        __builtin_prefetch(ids);
        return;
    }
    if (!PyTuple_Check(visits) || !PyTuple_Check(ids))
        return;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(visits); i++) {
        PyObject *visit = PyTuple_GET_ITEM(visits, i);
        if (step == 2)
            __builtin_prefetch(visit);
        else if (is_tuple_of(visit, 4))
            for (int f = 0; f < 4; f++)
                __builtin_prefetch(PyTuple_GET_ITEM(visit, f));
    }
    for (Py_ssize_t i = 0; step == 2 && i < PyTuple_GET_SIZE(ids); i++) {
        __builtin_prefetch(PyTuple_GET_ITEM(ids, i));
        __builtin_prefetch((const char *)PyTuple_GET_ITEM(ids, i) + 64);
    }
}

/* What advance_run fetches for a sign-in a few places ahead, each step once the one before it is done:
   the sign-in, its fields, the lookup of its account's state (dict_prefetch's three steps), then the
   state's (prefetch_state's last three). AHEAD[s]: how many sign-ins ahead step s is taken. */
static const Py_ssize_t AHEAD[] = {14, 12, 10, 8, 6, 4, 2, 1};
#define PREFETCH_STEPS ((int)(sizeof(AHEAD) / sizeof(AHEAD[0])))

static void prefetch_signin(PyObject *wanted, Py_ssize_t j, PyObject *held, int step)
{
    if (j >= PyList_GET_SIZE(wanted))
        return;
    PyObject *row = PyList_GET_ITEM(wanted, j);
    if (step == 0) {
        __builtin_prefetch(row);
        return;
    }
    if (!is_tuple_of(row, 4))
        return;
    if (step == 1) { /* the account, the address, the time, the event id */
        for (int i = 0; i < 4; i++)
            __builtin_prefetch(PyTuple_GET_ITEM(row, i));
        return;
    }
    PyObject *state = dict_prefetch(held, PyTuple_GET_ITEM(row, 0), step < 4 ? step - 2 : 2);
    if (step >= 5 && state != NULL)
        prefetch_state(state, step - 4);
}

/* A Visit's time into *t, when it is one (a tuple of four, the time a float); else 0. */
static int visit_time(PyObject *visit, double *t)
{
    if (!PyTuple_Check(visit) || PyTuple_GET_SIZE(visit) != 4 ||
        !PyFloat_CheckExact(PyTuple_GET_ITEM(visit, 2)))
        return 0;
    *t = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(visit, 2));
    return 1;
}

/* advance_run(start, wanted, located, held, changes, outcomes, visit_cls, state_cls, max_speed_kmh,
   min_distance_km, history_size, history_window_s, screen_margin, raw_tail, recent_ids,
   earth_radius_km) -> int.
   From ``start``, the sign-ins of ``wanted`` (SignIn tuples, ``located`` their locations) that the
   rule's quick path decides, as Engine.process decides them (its loop body is the twin): an account's
   first sign-in (rules.first_state), a re-delivery (rules.is_duplicate), and rules.advance where it
   decides (a sign-in newer than the account's others, from its last address or not even possibly too
   fast, the account without remembered alerts). Each new state goes into ``changes`` (where that dict
   holds an account's state and nothing else does, the state is renewed there in place), each outcome
   onto ``outcomes``. Returns where it stopped: the first sign-in it leaves to Python (no location, a
   proxy flag, anything else), or len(wanted). */
static PyObject *advance_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 16 || !PyList_Check(args[1]) || !PyList_Check(args[2]) || !PyDict_Check(args[3]) ||
        !PyDict_Check(args[4]) || !PyList_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "advance_run(start, wanted, located, held, changes, outcomes, "
                                         "visit_cls, state_cls, *policy)");
        return NULL;
    }
    Py_ssize_t k = PyLong_AsSsize_t(args[0]);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    PyObject *wanted = args[1], *located = args[2], *held = args[3], *changes = args[4],
             *outcomes = args[5];
    /* max speed, min distance, history size, window, screen margin, raw tail, recent ids, earth radius */
    double policy[8];
    for (int i = 0; i < 8; i++)
        if ((policy[i] = PyFloat_AsDouble(args[8 + i])) == -1.0 && PyErr_Occurred())
            return NULL;
    Py_ssize_t n = PyList_GET_SIZE(wanted);
    if (PyList_GET_SIZE(located) != n) {
        PyErr_SetString(PyExc_ValueError, "advance_run: a location for each sign-in");
        return NULL;
    }
    for (; k < n; k++) {
        for (int step = 0; step < PREFETCH_STEPS; step++)
            prefetch_signin(wanted, k + AHEAD[step], held, step);
        if (k + 2 < n) { /* its location: the rule reads its coordinates, make its collector's header */
            PyObject *ahead = PyList_GET_ITEM(located, k + 2);
            __builtin_prefetch(ahead);
            __builtin_prefetch((const char *)ahead - 2 * sizeof(uintptr_t)); /* (PyGC_Head) */
        }
        PyObject *row = PyList_GET_ITEM(wanted, k), *location = PyList_GET_ITEM(located, k);
        if (location == Py_None || !is_tuple_of(row, 7) || PyTuple_GET_ITEM(row, 6) != Py_False)
            break; /* the provider's location or proxy flag: Engine._with_vendor */
        PyObject *user = PyTuple_GET_ITEM(row, 0), *ip = PyTuple_GET_ITEM(row, 1),
                 *time = PyTuple_GET_ITEM(row, 2), *event_id = PyTuple_GET_ITEM(row, 3);
        int success = PyTuple_GET_ITEM(row, 4) == Py_True;
        if (!PyFloat_CheckExact(time) || (!success && PyTuple_GET_ITEM(row, 4) != Py_False))
            break;
        double t = PyFloat_AS_DOUBLE(time);
        PyObject *stored = PyDict_GetItemWithError(changes, user);
        int in_changes = stored != NULL;
        if (stored == NULL && !PyErr_Occurred() && held != changes) /* (one dict, applied at once) */
            stored = PyDict_GetItemWithError(held, user);
        if (stored == NULL && PyErr_Occurred())
            return NULL;
        /* An account's first sign-in (rules.first_state) is what advancing an empty state makes. */
        PyObject *history = empty_tuple, *ids = empty_tuple, *alerted = empty_tuple, *outcome = outcome_first;
        if (stored != NULL) {
            if (!is_tuple_of(stored, 3))
                break;
            history = PyTuple_GET_ITEM(stored, 0);
            ids = PyTuple_GET_ITEM(stored, 1);
            alerted = PyTuple_GET_ITEM(stored, 2);
            if (!PyTuple_Check(history) || !PyTuple_Check(ids) || !PyTuple_Check(alerted))
                break;
            int seen = 0; /* rules.is_duplicate */
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ids) && seen == 0; i++)
                seen = same_text(PyTuple_GET_ITEM(ids, i), event_id);
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(history) && seen == 0; i++) {
                PyObject *visit = PyTuple_GET_ITEM(history, i);
                seen = is_tuple_of(visit, 4) ? same_text(PyTuple_GET_ITEM(visit, 0), event_id) : -1;
            }
            if (seen < 0)
                break;
            if (seen) {
                if (PyList_Append(outcomes, outcome_duplicate) < 0)
                    return NULL;
                continue;
            }
            /* rules.advance, but an account with remembered alerts is left to Python */
            Py_ssize_t count = PyTuple_GET_SIZE(history);
            if (count == 0 || PyTuple_GET_SIZE(alerted) != 0)
                break;
            PyObject *last = PyTuple_GET_ITEM(history, count - 1);
            double last_time;
            if (!visit_time(last, &last_time) || t < last_time)
                break;
            int same_ip = same_text(PyTuple_GET_ITEM(last, 1), ip);
            if (same_ip < 0)
                break;
            if (!same_ip) {
                int maybe = could_be_impossible(PyTuple_GET_ITEM(last, 3), last_time, location, t, policy);
                if (maybe < 0)
                    return NULL;
                if (maybe)
                    break;
            }
            outcome = same_ip ? outcome_same_ip : (success ? outcome_plausible : outcome_failure_checked);
        }
        /* The new history and recent ids hold what the old ones held, and one more: where the old one
           is untracked and the one more settled, so is the new one, untracked here (make would walk
           it, and read the collector's header of every old visit or id: a cache miss each). */
        PyObject *state = NULL, *visits = NULL, *recent = with_id(ids, event_id, (Py_ssize_t)policy[6]);
        if (recent != NULL && !PyObject_GC_IsTracked(ids) && !may_be_tracked(event_id))
            PyObject_GC_UnTrack(recent);
        if (success) {
            PyObject *fields[5] = {args[6], event_id, ip, time, location};
            PyObject *visit = make(NULL, fields, 5);
            visits = visit != NULL ? append_visit(history, visit, t, policy) : NULL;
            if (visits != NULL && !PyObject_GC_IsTracked(history) && !may_be_tracked(visit))
                PyObject_GC_UnTrack(visits);
            Py_XDECREF(visit);
        }
        else
            visits = Py_NewRef(history);
        if (visits != NULL && recent != NULL && in_changes && Py_REFCNT(stored) == 1 &&
            Py_IS_TYPE(stored, (PyTypeObject *)args[7])) {
            /* The dict of changes holds the state's only reference (replay's store, or a state this
               batch made): changed in place, as nothing else can see it. A state made and another
               freed at every sign-in, each an object of a tuple subclass (not on tuples' free lists),
               and a second store into the dict, were 8% of a one-process replay of 10^6 lines. */
            PyObject *fields[2] = {visits, recent};
            renew(stored, fields, 2);
            if (PyList_Append(outcomes, outcome) < 0)
                return NULL;
            continue;
        }
        if (visits != NULL && recent != NULL) {
            PyObject *fields[4] = {args[7], visits, recent, alerted};
            state = make(NULL, fields, 4);
        }
        Py_XDECREF(visits);
        Py_XDECREF(recent);
        if (state == NULL)
            return NULL;
        int stored_ok = PyDict_SetItem(changes, user, state);
        Py_DECREF(state);
        if (stored_ok < 0 || PyList_Append(outcomes, outcome) < 0)
            return NULL;
    }
    return PyLong_FromSsize_t(k);
}

/* ``out.append(k)``: 0, or -1 with an exception set. */
static int append_index(PyObject *out, Py_ssize_t k)
{
    PyObject *at = PyLong_FromSsize_t(k);
    int appended = at != NULL ? PyList_Append(out, at) : -1;
    Py_XDECREF(at);
    return appended;
}

/* get_each(mapping, keys, default) -> (values, missing): each key's value in the dict (``default`` where
   it has none) and where those are, as its twin geoip.GeoIP.locate_many's loop over its address cache;
   each lookup's steps fetched a few keys ahead (dict_prefetch: a batch's addresses in a cache of 10^5,
   the lookups were a fifth of a replay worker's engine). */
#define GET_AHEAD_SLOT 8
#define GET_AHEAD_ENTRY 5
#define GET_AHEAD_KEY 2
static PyObject *get_each(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_CheckExact(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "get_each(dict, list of keys, default)");
        return NULL;
    }
    PyObject *mapping = args[0], *keys = args[1], *fallback = args[2];
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject *values = PyList_New(n), *missing = PyList_New(0);
    if (values == NULL || missing == NULL)
        goto fail;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (k + GET_AHEAD_SLOT < n)
            dict_prefetch(mapping, PyList_GET_ITEM(keys, k + GET_AHEAD_SLOT), 0);
        if (k + GET_AHEAD_ENTRY < n)
            dict_prefetch(mapping, PyList_GET_ITEM(keys, k + GET_AHEAD_ENTRY), 1);
        if (k + GET_AHEAD_KEY < n)
            dict_prefetch(mapping, PyList_GET_ITEM(keys, k + GET_AHEAD_KEY), 2);
        PyObject *value = PyDict_GetItemWithError(mapping, PyList_GET_ITEM(keys, k));
        if (value == NULL) {
            if (PyErr_Occurred())
                goto fail;
            value = fallback;
            if (append_index(missing, k) < 0)
                goto fail;
        }
        PyList_SET_ITEM(values, k, Py_NewRef(value));
    }
    return Py_BuildValue("(NN)", values, missing);
fail:
    Py_XDECREF(values);
    Py_XDECREF(missing);
    return NULL;
}

/* state._Index's probes: an open-addressing table of 32-bit fingerprints (``marks``, array "I") and
   slots (array "i": -1 empty, -2 a removed entry), of a power-of-two length. In C, where compiled
   Python read each entry as a boxed int through the array's item protocol: a probe of a table of 10^6
   accounts ran about 6 of them (70% full), and storing the packed accounts of a replay over 10^6
   accounts was a tenth of its time. */
/* An array of one type code ("I", "i", "Q"), its buffer in *view. */
static int typed_array(PyObject *obj, Py_buffer *view, const char *format, Py_ssize_t itemsize, int flags)
{
    if (PyObject_GetBuffer(obj, view, flags | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != itemsize || view->format == NULL || strcmp(view->format, format) != 0) {
        PyErr_Format(PyExc_ValueError, "an array '%s' expected", format);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

typedef struct {
    Py_buffer marks, slots;
    size_t mask;
} IndexArrays;

static int index_arrays(PyObject *marks, PyObject *slots, IndexArrays *ix)
{
    if (typed_array(marks, &ix->marks, "I", 4, PyBUF_WRITABLE) < 0)
        return -1;
    if (typed_array(slots, &ix->slots, "i", 4, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&ix->marks);
        return -1;
    }
    Py_ssize_t n = ix->slots.len / 4;
    if (ix->marks.len != ix->slots.len || n == 0 || (n & (n - 1))) {
        PyErr_SetString(PyExc_ValueError, "an index: arrays 'I' and 'i' of one power-of-two length");
        PyBuffer_Release(&ix->marks);
        PyBuffer_Release(&ix->slots);
        return -1;
    }
    ix->mask = (size_t)n - 1;
    return 0;
}

static void index_release(IndexArrays *ix)
{
    PyBuffer_Release(&ix->marks);
    PyBuffer_Release(&ix->slots);
}

static PyObject *index_full(void)
{
    PyErr_SetString(PyExc_ValueError, "index: the table is full");
    return NULL;
}

/* A slot number from Python: 0 to 2**31 - 1, else -1 with an error set. */
static int32_t slot_of(PyObject *v)
{
    long slot = PyLong_AsLong(v);
    if (slot == -1 && PyErr_Occurred())
        return -1;
    if (slot < 0 || slot > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a slot is 0 to 2**31 - 1");
        return -1;
    }
    return (int32_t)slot;
}

/* The arguments of the three: marks, slots, mark (and a slot, or not). */
static int index_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, IndexArrays *ix,
                      uint32_t *mark, int32_t *slot)
{
    if (nargs != want) {
        PyErr_SetString(PyExc_TypeError, "index_*(marks, slots, mark[, slot])");
        return -1;
    }
    unsigned long m = PyLong_AsUnsignedLong(args[2]);
    if (m == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (m > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a mark is 32 bits");
        return -1;
    }
    *mark = (uint32_t)m;
    if (want == 4 && (*slot = slot_of(args[3])) < 0)
        return -1;
    return index_arrays(args[0], args[1], ix);
}

/* One entry into a table with room: 1 when it took an empty entry, 0 a removed one, -1 when the
   table is full. */
static int index_put(const IndexArrays *ix, uint32_t mark, int32_t slot)
{
    uint32_t *marks = ix->marks.buf;
    int32_t *slots = ix->slots.buf;
    size_t i = mark & ix->mask, probes = 0;
    while (slots[i] >= 0 && probes++ <= ix->mask)
        i = (i + 1) & ix->mask;
    if (slots[i] >= 0)
        return -1;
    int fresh = slots[i] == -1;
    marks[i] = mark;
    slots[i] = slot;
    return fresh;
}

/* index_add(marks, slots, mark, slot) -> bool: _Index.add's probe and store (the caller grows the
   table first); True when it took an empty entry, False a removed one. */
static PyObject *index_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    IndexArrays ix;
    uint32_t mark;
    int32_t slot;
    if (index_args(args, nargs, 4, &ix, &mark, &slot) < 0)
        return NULL;
    int fresh = index_put(&ix, mark, slot);
    index_release(&ix);
    return fresh < 0 ? index_full() : PyBool_FromLong(fresh);
}

/* The entry a key's probe starts at, toward the cache (its str's hash, when computed already). */
static void index_prefetch(const IndexArrays *ix, PyObject *key)
{
    if (PyUnicode_CheckExact(key) && ((PyASCIIObject *)key)->hash != -1) {
        size_t i = (uint32_t)((PyASCIIObject *)key)->hash & ix->mask;
        __builtin_prefetch((const uint32_t *)ix->marks.buf + i);
        __builtin_prefetch((const int32_t *)ix->slots.buf + i);
    }
}

enum { INDEX_AHEAD = 8 };

/* index_add_many(marks, slots, keys, at) -> int: _Index.add of each key's mark (its hash's low 32 bits)
   and slot at[k], the entries fetched a few ahead; how many took an empty entry. The caller makes
   room for all first. */
static PyObject *index_add_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[2]) || !PyList_Check(args[3]) ||
        PyList_GET_SIZE(args[2]) != PyList_GET_SIZE(args[3])) {
        PyErr_SetString(PyExc_TypeError, "index_add_many(marks, slots, keys, at): two lists of one length");
        return NULL;
    }
    IndexArrays ix;
    if (index_arrays(args[0], args[1], &ix) < 0)
        return NULL;
    PyObject *keys = args[2], *at = args[3];
    Py_ssize_t n = PyList_GET_SIZE(keys), fresh = 0;
    int status = 0;
    for (Py_ssize_t k = 0; k < n && status == 0; k++) {
        if (k + INDEX_AHEAD < n)
            index_prefetch(&ix, PyList_GET_ITEM(keys, k + INDEX_AHEAD));
        Py_hash_t hash = PyObject_Hash(PyList_GET_ITEM(keys, k));
        int32_t slot = hash == -1 ? -1 : slot_of(PyList_GET_ITEM(at, k));
        int took = slot < 0 ? -2 : index_put(&ix, (uint32_t)hash, slot); /* -2: the error is set */
        if (took == -1)
            index_full();
        if (took < 0)
            status = -1;
        else
            fresh += took;
    }
    index_release(&ix);
    return status < 0 ? NULL : PyLong_FromSsize_t(fresh);
}

/* index_rehash(marks, slots, new_marks, new_slots) -> None: every live entry of a table into an empty
   bigger one (_Index._grow). */
static PyObject *index_rehash(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    IndexArrays from, to;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "index_rehash(marks, slots, new_marks, new_slots)");
        return NULL;
    }
    if (index_arrays(args[0], args[1], &from) < 0)
        return NULL;
    if (index_arrays(args[2], args[3], &to) < 0) {
        index_release(&from);
        return NULL;
    }
    const uint32_t *marks = from.marks.buf;
    const int32_t *slots = from.slots.buf;
    int status = 0;
    for (size_t i = 0; i <= from.mask && status >= 0; i++)
        if (slots[i] >= 0)
            status = index_put(&to, marks[i], slots[i]);
    index_release(&from);
    index_release(&to);
    if (status < 0)
        return index_full();
    Py_RETURN_NONE;
}

/* index_find(marks, slots, mark) -> list[int]: the slots stored under ``mark``, in probe order (most
   often none or one: the caller checks each slot's account, as _Index.find does). */
static PyObject *index_find(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    IndexArrays ix;
    uint32_t mark;
    if (index_args(args, nargs, 3, &ix, &mark, NULL) < 0)
        return NULL;
    const uint32_t *marks = ix.marks.buf;
    const int32_t *slots = ix.slots.buf;
    PyObject *found = PyList_New(0);
    size_t i = mark & ix.mask;
    for (size_t probes = 0; found != NULL && slots[i] != -1 && probes <= ix.mask; probes++) {
        if (slots[i] >= 0 && marks[i] == mark) {
            PyObject *v = PyLong_FromLong(slots[i]);
            if (v == NULL || PyList_Append(found, v) < 0)
                Py_CLEAR(found);
            Py_XDECREF(v);
        }
        i = (i + 1) & ix.mask;
    }
    index_release(&ix);
    return found;
}

/* index_remove(marks, slots, mark, slot) -> None: _Index.remove (the entry of that mark and slot, if
   there is one, becomes a removed one). */
static PyObject *index_remove(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    IndexArrays ix;
    uint32_t mark;
    int32_t slot;
    if (index_args(args, nargs, 4, &ix, &mark, &slot) < 0)
        return NULL;
    const uint32_t *marks = ix.marks.buf;
    int32_t *slots = ix.slots.buf;
    size_t i = mark & ix.mask;
    for (size_t probes = 0; slots[i] != -1 && probes <= ix.mask; probes++) {
        if (slots[i] == slot && marks[i] == mark) {
            slots[i] = -2;
            break;
        }
        i = (i + 1) & ix.mask;
    }
    index_release(&ix);
    Py_RETURN_NONE;
}

/* place_blobs(starts, sizes, at, blobs, base) -> None: the packed accounts just appended to the store's
   arena at ``base``, one after another: slot at[k] starts where blobs[k] does and has its size
   (CompactStore._store_cold_many; arrays "Q" and "I" that hold every slot named). */
static PyObject *place_blobs(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyList_Check(args[2]) || !PyList_Check(args[3]) ||
        PyList_GET_SIZE(args[2]) != PyList_GET_SIZE(args[3])) {
        PyErr_SetString(PyExc_TypeError, "place_blobs(starts, sizes, at, blobs, base): two lists of one length");
        return NULL;
    }
    unsigned long long offset = PyLong_AsUnsignedLongLong(args[4]);
    if (offset == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    Py_buffer starts, sizes;
    if (typed_array(args[0], &starts, "Q", 8, PyBUF_WRITABLE) < 0)
        return NULL;
    if (typed_array(args[1], &sizes, "I", 4, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&starts);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[2]), slots = sizes.len / 4;
    int status = starts.len / 8 == slots ? 0 : -1;
    for (Py_ssize_t k = 0; k < n && status == 0; k++) {
        PyObject *blob = PyList_GET_ITEM(args[3], k);
        int32_t slot = slot_of(PyList_GET_ITEM(args[2], k));
        if (slot < 0)
            status = -1;
        else if (!PyBytes_Check(blob) || slot >= slots || PyBytes_GET_SIZE(blob) > (Py_ssize_t)UINT32_MAX)
            status = -2;
        else {
            ((uint64_t *)starts.buf)[slot] = offset;
            ((uint32_t *)sizes.buf)[slot] = (uint32_t)PyBytes_GET_SIZE(blob);
            offset += (unsigned long long)PyBytes_GET_SIZE(blob);
        }
    }
    PyBuffer_Release(&starts);
    PyBuffer_Release(&sizes);
    if (status == -2 || (status == -1 && !PyErr_Occurred()))
        PyErr_SetString(PyExc_ValueError, "place_blobs: bytes, and slots of arrays of one length");
    if (status < 0)
        return NULL;
    Py_RETURN_NONE;
}

enum { WARM_AHEAD_SLOT = 8, WARM_AHEAD_ENTRY = 4 };

/* warm(hot, users, start, marks, slots, arena, starts, sizes) -> (k, slot): CompactStore.working_set's
   loop from users[start]. Each account held in ``hot`` is moved to its end (popped and put back); the
   loop stops at the first the index finds packed, and returns where it is and its slot (Python
   unpacks it and calls again from k + 1), or its slot as -1 where this cannot check a candidate (a
   user that is no plain UTF-8 text, a packed state of another version: Python searches); (len(users),
   -1) at the end. Each user's dict slot and index entry are fetched a few ahead: the accounts new to a
   replay over 10^6 (most of them) miss in both. */
static PyObject *warm(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyDict_CheckExact(args[0]) || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "warm(hot, users, start, marks, slots, arena, starts, sizes)");
        return NULL;
    }
    PyObject *hot = args[0], *users = args[1];
    Py_ssize_t k = PyLong_AsSsize_t(args[2]), n = PyList_GET_SIZE(users), found = -1;
    if (k == -1 && PyErr_Occurred())
        return NULL;
    IndexArrays ix;
    Py_buffer arena = {0}, starts = {0}, sizes = {0}; /* (released below whether taken or not) */
    if (index_arrays(args[3], args[4], &ix) < 0)
        return NULL;
    int status = PyObject_GetBuffer(args[5], &arena, PyBUF_SIMPLE) < 0 ||
                         typed_array(args[6], &starts, "Q", 8, PyBUF_SIMPLE) < 0 ||
                         typed_array(args[7], &sizes, "I", 4, PyBUF_SIMPLE) < 0
                     ? -1
                     : 0;
    const uint32_t *marks = ix.marks.buf;
    const int32_t *slots = ix.slots.buf;
    const unsigned char *bytes = arena.buf;
    Py_ssize_t held = starts.len / 8 < sizes.len / 4 ? starts.len / 8 : sizes.len / 4;
    for (k = k < 0 ? 0 : k; k < n && status == 0; k++) {
        if (k + WARM_AHEAD_SLOT < n) {
            dict_prefetch(hot, PyList_GET_ITEM(users, k + WARM_AHEAD_SLOT), 0);
            index_prefetch(&ix, PyList_GET_ITEM(users, k + WARM_AHEAD_SLOT));
        }
        if (k + WARM_AHEAD_ENTRY < n)
            dict_prefetch(hot, PyList_GET_ITEM(users, k + WARM_AHEAD_ENTRY), 1);
        PyObject *user = PyList_GET_ITEM(users, k);
        PyObject *state = PyDict_GetItemWithError(hot, user);
        if (state != NULL) {
            Py_INCREF(state);
            status = PyDict_DelItem(hot, user) < 0 || PyDict_SetItem(hot, user, state) < 0 ? -1 : 0;
            Py_DECREF(state);
            continue;
        }
        Py_hash_t hash = PyErr_Occurred() ? -1 : PyObject_Hash(user);
        if (hash == -1) {
            status = -1;
            break;
        }
        uint32_t mark = (uint32_t)hash;
        size_t i = mark & ix.mask;
        for (size_t probes = 0; slots[i] != -1 && probes <= ix.mask; probes++, i = (i + 1) & ix.mask) {
            int32_t slot = slots[i];
            if (slot < 0 || marks[i] != mark)
                continue;
            Py_ssize_t len;
            const char *text = text_of(user, &len);
            if (text == NULL || slot >= held) {
                found = -1;
                goto stop;
            }
            uint64_t at = ((const uint64_t *)starts.buf)[slot];
            uint32_t size = ((const uint32_t *)sizes.buf)[slot];
            if (size < 3 || at + size > (uint64_t)arena.len || bytes[at] != 1) { /* (statecodec.VERSION) */
                found = -1;
                goto stop;
            }
            if ((Py_ssize_t)(bytes[at + 1] | bytes[at + 2] << 8) == len && 3 + (uint64_t)len <= size &&
                memcmp(bytes + at + 3, text, (size_t)len) == 0) {
                found = slot;
                goto stop;
            }
        }
    }
stop:
    PyBuffer_Release(&sizes);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&arena);
    index_release(&ix);
    if (status < 0)
        return NULL;
    return Py_BuildValue("(nn)", k, found);
}

/* pack_state: statecodec.pack in C, for the states it can be sure of. */
static PyObject *name_source, *name_network, *name_asn, *text_geoip, *text_hosting;

typedef struct {
    char *data; /* first the caller's own (stack), then the heap's when that is too small */
    Py_ssize_t len, size;
    int on_heap;
} Buffer;

static int put(Buffer *b, const void *bytes, Py_ssize_t n)
{
    if (b->len + n > b->size) {
        Py_ssize_t size = (b->len + n) * 2;
        char *data = b->on_heap ? PyMem_Realloc(b->data, size) : PyMem_Malloc(size);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (!b->on_heap)
            memcpy(data, b->data, b->len);
        b->data = data;
        b->size = size;
        b->on_heap = 1;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

static int put_byte(Buffer *b, unsigned char v) { return put(b, &v, 1); }

static int put_double(Buffer *b, double v)
{
    unsigned char raw[8];
    return PyFloat_Pack8(v, (char *)raw, 1) < 0 ? -1 : put(b, raw, 8);
}

/* statecodec._str of a str that UTF-8 holds (0), or 1: leave the state to Python. */
static int put_text(Buffer *b, PyObject *text)
{
    Py_ssize_t n;
    const char *raw = text_of(text, &n); /* (a lone surrogate: surrogatepass is Python's) */
    if (raw == NULL || n > 0xFFFF)
        return 1;
    unsigned char length[2] = {(unsigned char)(n & 0xFF), (unsigned char)(n >> 8)};
    return put(b, length, 2) < 0 || put(b, raw, n) < 0 ? -1 : 0;
}

/* statecodec._event_id: a lower-case uuid in 16 bytes, an even-length lower-case hex id of under 256
   characters in half, anything else as text. 0, 1 (leave it to Python), -1. */
static int put_event_id(Buffer *b, PyObject *eid)
{
    Py_ssize_t n;
    const char *s = PyUnicode_Check(eid) && PyUnicode_IS_ASCII(eid) ? PyUnicode_AsUTF8AndSize(eid, &n) : NULL;
    if (s == NULL) {
        PyErr_Clear();
        return 1;
    }
    unsigned char raw[128];
    int uuid = n == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-';
    Py_ssize_t digits = 0;
    int hex = n > 0;
    /* the digits in order (a uuid's between its dashes), up to the first that is not one */
    Py_ssize_t runs[5][2] = {{0, 8}, {9, 13}, {14, 18}, {19, 23}, {24, 36}}, count = 5;
    if (!uuid) {
        runs[0][1] = n; /* (the whole text) */
        count = 1;
    }
    for (Py_ssize_t run = 0; run < count && hex; run++) {
        for (Py_ssize_t i = runs[run][0]; i < runs[run][1]; i++) {
            int v = hex_digit[(unsigned char)s[i]];
            if (v < 0) {
                if (uuid && s[i] == '-')
                    return 1; /* (the twin drops every dash before its hex check, then fails: Python's error) */
                hex = 0;
                break;
            }
            if (digits < 256) {
                if (digits % 2 == 0)
                    raw[digits / 2] = (unsigned char)(v << 4);
                else
                    raw[digits / 2] |= (unsigned char)v;
                digits++;
            }
        }
    }
    if (hex && uuid)
        return put_byte(b, 255) < 0 || put(b, raw, 16) < 0 ? -1 : 0;
    if (hex && !uuid && n % 2 == 0 && n < 256)
        return put_byte(b, (unsigned char)(n / 2)) < 0 || put(b, raw, n / 2) < 0 ? -1 : 0;
    if (put_byte(b, 0) < 0)
        return -1;
    return put_text(b, eid);
}

/* One visit of a state, as statecodec.pack writes a GeoIP-located one. 0, 1 (leave to Python), -1. */
static int put_visit(Buffer *b, PyObject *visit)
{
    double time;
    if (!visit_time(visit, &time))
        return 1;
    PyObject *location = PyTuple_GET_ITEM(visit, 3), *ip = PyTuple_GET_ITEM(visit, 1);
    PyObject *values[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
    PyObject *names[6] = {name_source, name_network, name_asn, name_latitude, name_longitude, name_radius};
    int status = -1;
    for (int i = 0; i < 6; i++)
        if ((values[i] = attr(location, names[i])) == NULL)
            goto done;
    status = 1;
    int geoip = PyObject_RichCompareBool(values[0], text_geoip, Py_EQ);
    int hosting = PyObject_RichCompareBool(values[1], text_hosting, Py_EQ);
    if (geoip < 0 || hosting < 0) {
        status = -1;
        goto done;
    }
    if (!geoip || !PyFloat_Check(values[3]) || !PyFloat_Check(values[4]) || !PyFloat_Check(values[5]))
        goto done; /* a vendor's location, stored whole: Python's */
    unsigned char flags = hosting && values[2] == Py_None ? 2 : 0, raw[13];
    if (put_double(b, time) < 0) {
        status = -1;
        goto done;
    }
    Py_ssize_t n;
    const char *text = text_of(ip, &n);
    if (text == NULL || memchr(text, '\0', n) != NULL)
        goto done; /* (a NUL: socket.inet_pton refuses it with its own error) */
    unsigned char address[4];
    int taken = address_of(text, n, AF_INET, address)
                    ? (put_byte(b, 4) < 0 || put(b, address, 4) < 0 ? -1 : 0)
                    : (put_byte(b, 0) < 0 ? -1 : put_text(b, ip));
    if (taken != 0 || (taken = put_event_id(b, PyTuple_GET_ITEM(visit, 0))) != 0) {
        status = taken;
        goto done;
    }
    raw[0] = flags;
    for (int i = 0; i < 3; i++)
        if (PyFloat_Pack4(PyFloat_AS_DOUBLE(values[3 + i]), (char *)raw + 1 + 4 * i, 1) < 0) {
            PyErr_Clear(); /* (too large for a float32: struct's error, Python's to raise) */
            goto done;
        }
    status = put(b, raw, 13) < 0 ? -1 : 0;
done:
    for (int i = 0; i < 6; i++)
        Py_XDECREF(values[i]);
    return status;
}

/* pack_state(user, state) -> bytes | None: statecodec.pack's bytes for a state whose visits were all
   located by GeoIP and that remembers no alert (its twin writes every other, and anything this is not
   sure of: None). */
static PyObject *pack_state(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 3) {
        PyErr_SetString(PyExc_TypeError, "pack_state(user, state)");
        return NULL;
    }
    PyObject *visits = PyTuple_GET_ITEM(args[1], 0), *ids = PyTuple_GET_ITEM(args[1], 1),
             *alerted = PyTuple_GET_ITEM(args[1], 2);
    if (!PyTuple_Check(visits) || !PyTuple_Check(ids) || !PyTuple_Check(alerted) ||
        PyTuple_GET_SIZE(alerted) != 0 || PyTuple_GET_SIZE(visits) > 127 || PyTuple_GET_SIZE(ids) > 255)
        Py_RETURN_NONE;
    char first[512]; /* (most states fit: no allocation but the bytes') */
    Buffer b = {first, 0, sizeof first, 0};
    int status = put_byte(&b, 1);
    if (status == 0)
        status = put_text(&b, args[0]);
    Py_ssize_t count = PyTuple_GET_SIZE(visits);
    double newest = 0.0; /* statecodec.newest_time: the last visit's (no alerts here) */
    if (status == 0 && count > 0 && !visit_time(PyTuple_GET_ITEM(visits, count - 1), &newest))
        status = 1;
    if (status == 0)
        status = put_double(&b, newest);
    if (status == 0)
        status = put_byte(&b, (unsigned char)count);
    for (Py_ssize_t i = 0; i < count && status == 0; i++)
        status = put_visit(&b, PyTuple_GET_ITEM(visits, i));
    if (status == 0)
        status = put_byte(&b, (unsigned char)PyTuple_GET_SIZE(ids));
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ids) && status == 0; i++) {
        PyObject *eid = PyTuple_GET_ITEM(ids, i);
        Py_ssize_t visit = -1; /* the last visit with this id (the twin's dict keeps the last) */
        for (Py_ssize_t k = 0; k < count && status == 0; k++) {
            int same = same_text(PyTuple_GET_ITEM(PyTuple_GET_ITEM(visits, k), 0), eid);
            if (same < 0)
                status = 1;
            else if (same)
                visit = k;
        }
        if (status == 0)
            status = visit >= 0 ? put_byte(&b, (unsigned char)(0x80 | visit))
                                : (put_byte(&b, 0) < 0 ? -1 : put_text(&b, eid));
    }
    if (status == 0)
        status = put_byte(&b, 0); /* no alerts */
    PyObject *out = status == 0 ? PyBytes_FromStringAndSize(b.data, b.len) : NULL;
    if (b.on_heap)
        PyMem_Free(b.data);
    if (status == 1)
        Py_RETURN_NONE;
    return out;
}

static const Py_ssize_t PACK_AHEAD[] = {8, 6, 4, 2};

/* pack_states(users, states) -> list[bytes | None]: pack_state of each pair, the states fetched a few
   ahead (statecodec.pack_many: the least recently used accounts, packed a slice at a time). */
static PyObject *pack_states(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0]) || !PyList_Check(args[1]) ||
        PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError, "pack_states(users, states): two lists of one length");
        return NULL;
    }
    PyObject *users = args[0], *states = args[1];
    Py_ssize_t n = PyList_GET_SIZE(states);
    PyObject *out = PyList_New(n);
    for (Py_ssize_t k = 0; out != NULL && k < n; k++) {
        for (int step = 0; step < 4; step++)
            if (k + PACK_AHEAD[step] < n)
                prefetch_state(PyList_GET_ITEM(states, k + PACK_AHEAD[step]), step);
        PyObject *pair[2] = {PyList_GET_ITEM(users, k), PyList_GET_ITEM(states, k)};
        PyObject *packed = pack_state(NULL, pair, 2);
        if (packed == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, k, packed);
    }
    return out;
}

/* pack_signins / unpack_signins. A sign-in in a blob: its time (a double), a flags byte (1: success,
   2: sent whole, in ``special``, 4: its three texts ASCII), the UTF-8 lengths of user, ip and event id
   (uint32 each), the user's str hash (the packer worked it out to pick the share; the worker's dict
   lookups need it again), then the texts' bytes. Native byte order: the blob never leaves the machine.
   The worker is a fork, with the same hash secret; unpack_signins still checks the first user's hash
   against its own before it takes the others'. (Over the bench slice, the worker's instructions:
   1,583.6M -> 1,493.8M, its unpacking 154.6M -> 108.0M.) */
#define HEAD (sizeof(double) + 1 + 3 * sizeof(uint32_t) + sizeof(int64_t))
enum { FLAG_SUCCESS = 1, FLAG_SPECIAL = 2, FLAG_ASCII = 4 };

typedef struct {
    const char *text[3];
    Py_ssize_t len[3];
    double time;
    Py_hash_t hash;
    int owner;
    int special;
    int success;
    int ascii;
} Packed;

/* The fields of one sign-in for the blob; ``special`` when it must go whole. Only its owner for the
   share ``keep``. */
static int pack_one(PyObject *event, Py_ssize_t n, const unsigned char *owners, Py_ssize_t keep, Packed *p)
{
    p->special = 1;
    if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) != SIGNIN_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "pack_signins: a SignIn expected");
        return -1;
    }
    PyObject *user = PyTuple_GET_ITEM(event, 0);
    if (!PyUnicode_Check(user)) {
        PyErr_SetString(PyExc_TypeError, "pack_signins: a user must be a str");
        return -1;
    }
    Py_hash_t h = PyObject_Hash(user);
    if (h == -1)
        return -1;
    p->hash = h;
    Py_ssize_t k = (Py_ssize_t)(h % (Py_hash_t)n);
    k = k < 0 ? k + n : k; /* as Python's hash(user) % n */
    p->owner = owners != NULL ? owners[k] : (int)k;
    if (p->owner == keep)
        return 0;
    PyObject *when = PyTuple_GET_ITEM(event, 2), *ok = PyTuple_GET_ITEM(event, 4);
    if (PyTuple_GET_ITEM(event, 5) != Py_None || PyTuple_GET_ITEM(event, 6) != Py_False ||
        !PyFloat_CheckExact(when) || (ok != Py_True && ok != Py_False))
        return 0;
    static const int fields[3] = {0, 1, 3};
    p->ascii = 1;
    for (int f = 0; f < 3; f++) {
        PyObject *v = PyTuple_GET_ITEM(event, fields[f]);
        if (!PyUnicode_CheckExact(v))
            return 0;
        p->ascii &= PyUnicode_IS_ASCII(v);
        p->text[f] = PyUnicode_AsUTF8AndSize(v, &p->len[f]);
        if (p->text[f] == NULL || p->len[f] > UINT32_MAX) {
            PyErr_Clear(); /* (a lone surrogate: sent whole) */
            return 0;
        }
    }
    p->time = PyFloat_AS_DOUBLE(when);
    p->success = ok == Py_True;
    p->special = 0;
    return 0;
}

static PyObject *pack_signins(PyObject *self, PyObject *args)
{
    PyObject *events, *owned_by = Py_None;
    Py_ssize_t n, keep = -1;
    if (!PyArg_ParseTuple(args, "O!n|On", &PyList_Type, &events, &n, &owned_by, &keep))
        return NULL;
    if (owned_by == Py_None)
        owned_by = NULL;
    else if (!PyBytes_Check(owned_by)) {
        PyErr_SetString(PyExc_TypeError, "pack_signins: owners must be bytes or None");
        return NULL;
    }
    if (n < 1 || n > 1024) {
        PyErr_SetString(PyExc_ValueError, "pack_signins: 1 to 1024 workers");
        return NULL;
    }
    if (keep < -1 || keep >= n) {
        PyErr_SetString(PyExc_ValueError, "pack_signins: the share kept is not one of the shares");
        return NULL;
    }
    /* owners: the share of each of len(owners) buckets (hash(user) % len(owners)), where there are more
       buckets than shares (replay's main process takes fewer accounts than a worker) */
    const unsigned char *owners = owned_by != NULL ? (const unsigned char *)PyBytes_AS_STRING(owned_by) : NULL;
    Py_ssize_t buckets = owned_by != NULL ? PyBytes_GET_SIZE(owned_by) : n;
    for (Py_ssize_t b = 0; owners != NULL && b < buckets; b++)
        if (owners[b] >= n) {
            PyErr_SetString(PyExc_ValueError, "pack_signins: a bucket's owner past the shares");
            return NULL;
        }
    if (buckets < 1) {
        PyErr_SetString(PyExc_ValueError, "pack_signins: no buckets");
        return NULL;
    }
    Py_ssize_t m = PyList_GET_SIZE(events);
    Packed *packed = PyMem_Calloc(m ? m : 1, sizeof(Packed));
    Py_ssize_t *size = PyMem_Calloc(n, sizeof(Py_ssize_t)), *count = PyMem_Calloc(n, sizeof(Py_ssize_t));
    char **at = PyMem_Calloc(n, sizeof(char *));
    int32_t **place = PyMem_Calloc(n, sizeof(int32_t *));
    PyObject *blobs = PyList_New(n), *specials = PyList_New(n), *kept = PyList_New(0), *out = NULL;
    PyObject *places = PyList_New(n);
    if (m > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "pack_signins: a batch of 2**31 sign-ins or more");
        goto done;
    }
    if (packed == NULL || size == NULL || count == NULL || at == NULL || place == NULL ||
        blobs == NULL || specials == NULL || kept == NULL || places == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        Packed *p = &packed[i];
        if (pack_one(PyList_GET_ITEM(events, i), buckets, owners, keep, p) < 0)
            goto done;
        if (p->owner == keep) { /* the share kept as it is: its sign-ins themselves, not a copy */
            if (PyList_Append(kept, PyList_GET_ITEM(events, i)) < 0)
                goto done;
            continue;
        }
        size[p->owner] += HEAD + (p->special ? 0 : p->len[0] + p->len[1] + p->len[2]);
        count[p->owner]++;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *blob = count[k] ? PyBytes_FromStringAndSize(NULL, size[k]) : Py_NewRef(Py_None);
        PyObject *special = count[k] ? PyDict_New() : Py_NewRef(Py_None);
        PyList_SET_ITEM(blobs, k, blob);
        PyList_SET_ITEM(specials, k, special);
        if (blob == NULL || special == NULL)
            goto done;
        at[k] = count[k] ? PyBytes_AS_STRING(blob) : NULL;
        Py_ssize_t in_share = k == keep ? PyList_GET_SIZE(kept) : count[k];
        count[k] = 0; /* from here: the place of the next sign-in in the worker's share */
        PyObject *where = PyBytes_FromStringAndSize(NULL, in_share * (Py_ssize_t)sizeof(int32_t));
        PyList_SET_ITEM(places, k, where);
        if (where == NULL)
            goto done;
        place[k] = (int32_t *)PyBytes_AS_STRING(where);
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        Packed *p = &packed[i];
        *place[p->owner]++ = (int32_t)i;
        if (p->owner == keep)
            continue;
        char *w = at[p->owner];
        unsigned char flags = (unsigned char)((p->success ? FLAG_SUCCESS : 0) |
                                              (p->special ? FLAG_SPECIAL : p->ascii ? FLAG_ASCII : 0));
        uint32_t len[3] = {0, 0, 0};
        int64_t hash = (int64_t)p->hash;
        if (p->special) {
            PyObject *key = PyLong_FromSsize_t(count[p->owner]);
            PyObject *special = PyList_GET_ITEM(specials, p->owner);
            int failed = key == NULL || PyDict_SetItem(special, key, PyList_GET_ITEM(events, i)) < 0;
            Py_XDECREF(key);
            if (failed)
                goto done;
        }
        else {
            for (int f = 0; f < 3; f++)
                len[f] = (uint32_t)p->len[f];
        }
        memcpy(w, &p->time, sizeof(double));
        w[sizeof(double)] = (char)flags;
        memcpy(w + sizeof(double) + 1, len, sizeof(len));
        memcpy(w + sizeof(double) + 1 + sizeof(len), &hash, sizeof(hash));
        w += HEAD;
        for (int f = 0; f < 3; f++) {
            if (len[f])
                memcpy(w, p->text[f], len[f]);
            w += len[f];
        }
        at[p->owner] = w;
        count[p->owner]++;
    }
    out = PyList_New(n);
    if (out == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *blob = PyList_GET_ITEM(blobs, k);
        PyObject *item = k == keep ? Py_NewRef(PyList_GET_SIZE(kept) ? kept : Py_None)
                         : blob == Py_None ? Py_NewRef(Py_None)
                                           : PyTuple_Pack(2, blob, PyList_GET_ITEM(specials, k));
        if (item == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, k, item);
    }
    Py_SETREF(out, PyTuple_Pack(2, out, places));
done:
    PyMem_Free(packed);
    PyMem_Free(size);
    PyMem_Free(count);
    PyMem_Free(at);
    PyMem_Free(place);
    Py_XDECREF(blobs);
    Py_XDECREF(specials);
    Py_XDECREF(kept);
    Py_XDECREF(places);
    return out;
}

static PyObject *unpack_signins(PyObject *self, PyObject *args)
{
    const char *p, *end;
    Py_ssize_t size;
    PyObject *special;
    PyTypeObject *signin;
    if (!PyArg_ParseTuple(args, "y#O!O!", &p, &size, &PyDict_Type, &special, &PyType_Type, &signin))
        return NULL;
    if (!PyType_IsSubtype(signin, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "signin_type must be a tuple type");
        return NULL;
    }
    end = p + size;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    int same_hashes = -1; /* whether the packer's str hashes are this process's: -1 until the first */
    while (p < end) {
        double when;
        uint32_t len[3];
        int64_t hash;
        if ((size_t)(end - p) < HEAD)
            goto corrupt;
        memcpy(&when, p, sizeof(double));
        unsigned char flags = (unsigned char)p[sizeof(double)];
        memcpy(len, p + sizeof(double) + 1, sizeof(len));
        memcpy(&hash, p + sizeof(double) + 1 + sizeof(len), sizeof(hash));
        p += HEAD;
        if ((uint64_t)len[0] + len[1] + len[2] > (uint64_t)(end - p))
            goto corrupt;
        PyObject *row;
        if (flags & FLAG_SPECIAL) {
            PyObject *key = PyLong_FromSsize_t(PyList_GET_SIZE(out));
            if (key == NULL)
                goto failed;
            row = PyDict_GetItemWithError(special, key);
            Py_DECREF(key);
            if (row == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "unpack_signins: a special sign-in is missing");
                goto failed;
            }
            Py_INCREF(row);
        }
        else {
            PyObject *text[3];
            for (int f = 0; f < 3; f++) {
                text[f] = flags & FLAG_ASCII ? ascii_text(p, len[f]) : PyUnicode_DecodeUTF8(p, len[f], "strict");
                p += len[f];
                if (text[f] == NULL) {
                    for (int g = 0; g < f; g++)
                        Py_DECREF(text[g]);
                    goto failed;
                }
            }
            if (same_hashes < 0) {
                Py_hash_t own = PyObject_Hash(text[0]);
                same_hashes = own == (Py_hash_t)hash;
                if (own == -1)
                    PyErr_Clear(); /* (a str's hash does not fail; if it did, the lookups would hash again) */
            }
            else if (same_hashes)
                ((PyASCIIObject *)text[0])->hash = (Py_hash_t)hash;
            row = plain_signin(signin, text[0], text[1], when, text[2], flags & FLAG_SUCCESS);
            if (row == NULL)
                goto failed;
        }
        int appended = PyList_Append(out, row);
        Py_DECREF(row);
        if (appended < 0)
            goto failed;
    }
    return out;
corrupt:
    PyErr_SetString(PyExc_ValueError, "unpack_signins: a truncated blob");
failed:
    Py_DECREF(out);
    return NULL;
}

/* Name ``k`` of a record index (geoindex.Names.__getitem__): from ``decoded``, or decoded from the
   names' text where ``starts`` (int32) says, and kept there. A borrowed reference; NULL on error. */
static PyObject *index_name(PyObject *decoded, const Py_buffer *text, const Py_buffer *starts, Py_ssize_t k)
{
    PyObject *name = PyList_GET_ITEM(decoded, k);
    if (name != Py_None)
        return name;
    int32_t start, end;
    memcpy(&start, (const char *)starts->buf + k * 4, 4);
    memcpy(&end, (const char *)starts->buf + (k + 1) * 4, 4);
    if (start < 0 || start > end || end > text->len) {
        PyErr_SetString(PyExc_ValueError, "a place name past the names' text");
        return NULL;
    }
    name = PyUnicode_DecodeUTF8((const char *)text->buf + start, end - start, "strict");
    if (name == NULL || PyList_SetItem(decoded, k, name) < 0)
        return NULL;
    return name;
}

/* index_locations(rows, latitude, longitude, radius_km, city, country, names_decoded, names_text,
   name_starts, default_radius, coarse_radius, database, location_cls, slots) -> list[Location]: the
   Location of each row of the record index's place columns (buffers of float64, float64, float64,
   int32, int32), as its twin makes them: geoindex.RecordIndex.fields, then geoip.GeoIP._location
   (model.new_location). The names as geoindex.Names holds them. */
static PyObject *index_locations(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 14 || !PyList_Check(args[0]) || !PyList_Check(args[6]) || !PyTuple_Check(args[13])) {
        PyErr_SetString(PyExc_TypeError, "index_locations(rows, latitude, longitude, radius_km, city, country, "
                                         "names_decoded, names_text, name_starts, default_radius, "
                                         "coarse_radius, database, cls, slots)");
        return NULL;
    }
    static const Py_ssize_t widths[5] = {8, 8, 8, 4, 4};
    Py_buffer columns[7]; /* the five place columns, the names' text and their starts */
    int held = 0;
    PyObject *out = NULL;
    for (; held < 7; held++)
        if (PyObject_GetBuffer(args[held < 5 ? 1 + held : 2 + held], &columns[held], PyBUF_SIMPLE) < 0)
            goto done;
    Py_ssize_t n = columns[0].len / 8;
    for (int c = 0; c < 5; c++)
        if (columns[c].len != n * widths[c]) {
            PyErr_SetString(PyExc_ValueError, "index_locations: columns of one length");
            goto done;
        }
    PyObject *rows = args[0], *names = args[6], *default_radius = args[9], *coarse_radius = args[10];
    Py_ssize_t count = PyList_GET_SIZE(rows), n_names = PyList_GET_SIZE(names);
    if (columns[6].len < (n_names + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "index_locations: a start for each name, and the end");
        goto done;
    }
    out = PyList_New(count);
    if (out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t row = PyLong_AsSsize_t(PyList_GET_ITEM(rows, i));
        if (row == -1 && PyErr_Occurred())
            goto fail;
        if (row < 0 || row >= n) {
            PyErr_SetString(PyExc_IndexError, "index_locations: no such row");
            goto fail;
        }
        double lat, lon, radius;
        int32_t city_at, country_at;
        memcpy(&lat, (const char *)columns[0].buf + row * 8, 8);
        memcpy(&lon, (const char *)columns[1].buf + row * 8, 8);
        memcpy(&radius, (const char *)columns[2].buf + row * 8, 8);
        memcpy(&city_at, (const char *)columns[3].buf + row * 4, 4);
        memcpy(&country_at, (const char *)columns[4].buf + row * 4, 4);
        if (city_at >= n_names || country_at >= n_names) {
            PyErr_SetString(PyExc_IndexError, "index_locations: no such name");
            goto fail;
        }
        PyObject *city = city_at >= 0 ? index_name(names, &columns[5], &columns[6], city_at) : Py_None;
        PyObject *country = country_at >= 0 ? index_name(names, &columns[5], &columns[6], country_at) : Py_None;
        if (city == NULL || country == NULL)
            goto fail;
        PyObject *lat_o = PyFloat_FromDouble(lat), *lon_o = PyFloat_FromDouble(lon);
        /* (NaN: the record has no radius; none, or not above 0: the default) */
        PyObject *radius_o = radius == radius && radius > 0 ? PyFloat_FromDouble(radius) : Py_NewRef(default_radius);
        PyObject *place = NULL, *location = NULL;
        int coarse = city == Py_None ? 1 : (radius_o != NULL ? PyObject_RichCompareBool(radius_o, coarse_radius, Py_GE) : -1);
        if (lat_o != NULL && lon_o != NULL && radius_o != NULL && coarse >= 0) {
            PyObject *key_args[4] = {lat_o, lon_o, country, city};
            place = place_key(NULL, key_args, 4);
        }
        if (place != NULL) {
            PyObject *values[14] = {args[12], args[13], lat_o, lon_o, radius_o, country, city,
                                    coarse ? Py_True : Py_False, args[11], text_geoip, Py_None, Py_None, Py_None, place};
            location = make_slotted(NULL, values, 14);
        }
        Py_XDECREF(lat_o);
        Py_XDECREF(lon_o);
        Py_XDECREF(radius_o);
        Py_XDECREF(place);
        if (location == NULL)
            goto fail;
        PyList_SET_ITEM(out, i, location);
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    for (int c = 0; c < held; c++)
        PyBuffer_Release(&columns[c]);
    return out;
}

/* all_made(rows, cls, field) -> bool: every item of the list ``rows`` is exactly of type ``cls`` (a tuple
   type) with its item ``field`` not None: a batch that decode_canonical decoded whole, each sign-in
   with its event id (codec.all_signins). Its loop in compiled Python, and ``None not in`` such a list,
   compared each item with None: 290 and 160 instructions a line. */
static PyObject *all_made(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[0]) || !PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "all_made(list, cls, field)");
        return NULL;
    }
    Py_ssize_t field = PyLong_AsSsize_t(args[2]);
    if (field == -1 && PyErr_Occurred())
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[0]); i++) {
        PyObject *row = PyList_GET_ITEM(args[0], i);
        if ((PyObject *)Py_TYPE(row) != args[1] || !PyTuple_Check(row) || field < 0 ||
            field >= PyTuple_GET_SIZE(row) || PyTuple_GET_ITEM(row, field) == Py_None)
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* objects(raws, max_bytes) -> range | list[int] | None: codec.objects, the positions of the inputs that
   start with "{" within the size limit; range(len(raws)) when all of them do (the common batch: no
   list of positions to make); None when one is not bytes. */
static int may_be_record(PyObject *raw, Py_ssize_t max_bytes)
{
    return PyBytes_GET_SIZE(raw) > 0 && PyBytes_AS_STRING(raw)[0] == '{' && PyBytes_GET_SIZE(raw) <= max_bytes;
}

static PyObject *objects(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "objects(list of bytes, max_bytes)");
        return NULL;
    }
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[1]);
    if (max_bytes == -1 && PyErr_Occurred())
        return NULL;
    PyObject *raws = args[0];
    Py_ssize_t n = PyList_GET_SIZE(raws), i;
    for (i = 0; i < n; i++) { /* (bytes only: None, for the caller's own loop) */
        PyObject *raw = PyList_GET_ITEM(raws, i);
        if (!PyBytes_Check(raw))
            Py_RETURN_NONE;
        if (!may_be_record(raw, max_bytes))
            break;
    }
    if (i == n)
        return PyObject_CallFunction((PyObject *)&PyRange_Type, "n", n);
    PyObject *out = PyList_New(0);
    for (Py_ssize_t k = 0; out != NULL && k < n; k++) {
        PyObject *raw = PyList_GET_ITEM(raws, k);
        if (!PyBytes_Check(raw)) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        if (may_be_record(raw, max_bytes) && append_index(out, k) < 0)
            Py_CLEAR(out);
    }
    return out;
}

/* split_lines(block) -> list[bytes]: ``block.split(b"\n")``, each newline found by memchr. CPython splits
   on one byte with a loop a byte at a time: 5 instructions a byte, 880 a line of the benchmark's input
   (5% of a replay's instructions); memchr takes a few dozen. */
static PyObject *split_lines(PyObject *self, PyObject *block)
{
    if (!PyBytes_CheckExact(block)) {
        PyErr_SetString(PyExc_TypeError, "split_lines(bytes)");
        return NULL;
    }
    const char *start = PyBytes_AS_STRING(block), *end = start + PyBytes_GET_SIZE(block), *at = start;
    PyObject *out = PyList_New(0);
    while (out != NULL) {
        const char *newline = memchr(at, '\n', (size_t)(end - at));
        const char *stop = newline != NULL ? newline : end;
        PyObject *piece = PyBytes_FromStringAndSize(at, stop - at);
        if (piece == NULL || PyList_Append(out, piece) < 0)
            Py_CLEAR(out);
        Py_XDECREF(piece);
        if (newline == NULL)
            break;
        at = newline + 1;
    }
    return out;
}

/* A buffer of int64 (tree_locate's places) in *view, its length in *n; -1 with TypeError when it is not. */
static int int64_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t *n)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len % (Py_ssize_t)sizeof(int64_t) != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "a buffer of int64");
        return -1;
    }
    *n = view->len / (Py_ssize_t)sizeof(int64_t);
    return 0;
}

/* rows_wanted(places, known) -> list[int]: the rows of the record index in ``places`` (tree_locate's,
   int64; those below 0 are not rows) that the dict ``known`` does not hold, each once, in the order
   met: the places a batch's new addresses need a Location made for (geoip.GeoIP._place_new). */
static PyObject *rows_wanted(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "rows_wanted(places, dict)");
        return NULL;
    }
    Py_buffer view;
    Py_ssize_t n;
    if (int64_buffer(args[0], &view, &n) < 0)
        return NULL;
    const int64_t *places = view.buf;
    PyObject *out = PyList_New(0), *met = PySet_New(NULL);
    if (out == NULL || met == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (places[i] < 0)
            continue;
        PyObject *row = PyLong_FromLongLong(places[i]);
        if (row == NULL)
            goto fail;
        int wanted = PyDict_Contains(args[1], row);
        if (wanted == 0)
            wanted = PySet_Contains(met, row);
        if (wanted == 0 && (PySet_Add(met, row) < 0 || PyList_Append(out, row) < 0))
            wanted = -1;
        Py_DECREF(row);
        if (wanted < 0)
            goto fail;
    }
    Py_DECREF(met);
    PyBuffer_Release(&view);
    return out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(met);
    PyBuffer_Release(&view);
    return NULL;
}

/* place_each(keys, places, by_place, into) -> list[int]: for each key whose place (``places``, as
   rows_wanted's) is a row, ``into[key] = by_place[row]`` (KeyError where by_place lacks it); returns
   where the other keys are, for the caller. The batch's new addresses into the address cache, one C
   loop where compiled Python made a dict of them, popped each and called a method each
   (geoip.GeoIP._place_new). */
static PyObject *place_each(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_Check(args[0]) || !PyDict_CheckExact(args[2]) || !PyDict_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "place_each(keys, places, by_place, into)");
        return NULL;
    }
    Py_buffer view;
    Py_ssize_t n;
    if (int64_buffer(args[1], &view, &n) < 0)
        return NULL;
    PyObject *out = NULL;
    if (n != PyList_GET_SIZE(args[0])) {
        PyErr_SetString(PyExc_ValueError, "place_each: a place for each key");
        goto done;
    }
    const int64_t *places = view.buf;
    out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        if (places[i] < 0) {
            if (append_index(out, i) < 0)
                Py_CLEAR(out);
            continue;
        }
        PyObject *row = PyLong_FromLongLong(places[i]), *value = NULL;
        if (row != NULL && (value = PyDict_GetItemWithError(args[2], row)) == NULL && !PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, row);
        if (value == NULL || PyDict_SetItem(args[3], PyList_GET_ITEM(args[0], i), value) < 0)
            Py_CLEAR(out);
        Py_XDECREF(row);
    }
done:
    PyBuffer_Release(&view);
    return out;
}

/* geodesic_km: geographiclib's Geodesic.Inverse(lat1, lon1, lat2, lon2, DISTANCE)["s12"], operation for
   operation (geographiclib 2.x, its Python), for geo.geodesic_km: the exact figure of every candidate
   pair, where its Python took 50-90 us a pair (7% of a replay worker's time). Python's float arithmetic
   is this C's (no contraction into fused multiply-adds: see native.py's flags); math.sin, cos, atan2,
   sqrt, fmod and pow are this libm, math.remainder is IEEE's remainder (exact, as libm's), round() is
   nearbyint (ties to even); math.hypot is Python's own algorithm, so it is called. The ellipsoid's
   constants come from the geographiclib object itself (geodesic_setup). A test holds the two equal,
   bit for bit, over hundreds of thousands of pairs. */
#define GEO_ORDER 6
static struct {
    int ready;
    double a, f, f1, ep2, n, b, etol2;
    double A3x[GEO_ORDER], C3x[(GEO_ORDER * (GEO_ORDER - 1)) / 2];
} geod;
static PyObject *math_hypot; /* math.hypot */
static int geod_failed;      /* a call to math.hypot failed: an exception is set */

#define GEO_PI 3.141592653589793
#define DEG_TO_RAD (GEO_PI / 180.0)

static double py_hypot(double x, double y)
{
    PyObject *args[2] = {PyFloat_FromDouble(x), PyFloat_FromDouble(y)}, *r = NULL;
    if (args[0] != NULL && args[1] != NULL)
        r = PyObject_Vectorcall(math_hypot, args, 2, NULL);
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    if (r == NULL) {
        geod_failed = 1;
        return NAN;
    }
    double v = PyFloat_AsDouble(r);
    Py_DECREF(r);
    return v;
}

static double g_sq(double x) { return x * x; }
static double g_max(double a, double b) { return b > a ? b : a; } /* max(a, b): the first unless b is greater */
static double g_min(double a, double b) { return b < a ? b : a; }
static int g_pymod4(long q) { return (int)(((q % 4) + 4) % 4); } /* Python's q % 4 */

static void g_norm(double *x, double *y)
{
    double r = py_hypot(*x, *y);
    *x = *x / r;
    *y = *y / r;
}

static void g_sum(double u, double v, double *s_out, double *t_out)
{
    double s = u + v, up = s - v, vpp = s - up;
    up -= u;
    vpp -= v;
    *s_out = s;
    *t_out = s == 0 ? s : 0.0 - (up + vpp);
}

static double g_polyval(int N, const double *p, int s, double x)
{
    double y = N < 0 ? 0.0 : p[s];
    while (N > 0) {
        N--;
        s++;
        y = y * x + p[s];
    }
    return y;
}

static double g_anground(double x)
{
    const double z = 1 / 16.0;
    double y = fabs(x);
    if (y < z)
        y = z - (z - y);
    return copysign(y, x);
}

static double g_remainder(double x, double y) { return isfinite(x) ? remainder(x, y) : NAN; }

static void g_angdiff(double x, double y, double *d_out, double *t_out)
{
    double d, t;
    g_sum(g_remainder(-x, 360), g_remainder(y, 360), &d, &t);
    g_sum(g_remainder(d, 360), t, &d, &t);
    if (d == 0 || fabs(d) == 180)
        d = copysign(d, t == 0 ? y - x : -t);
    *d_out = d;
    *t_out = t;
}

static void g_quadrant(long q, double *s, double *c)
{
    double sv = *s, cv = *c;
    int k = g_pymod4(q);
    if (k == 1) {
        *s = cv;
        *c = -sv;
    }
    else if (k == 2) {
        *s = -sv;
        *c = -cv;
    }
    else if (k == 3) {
        *s = -cv;
        *c = sv;
    }
}

static void g_sincosd(double x, double *s_out, double *c_out)
{
    double r = isfinite(x) ? fmod(x, 360) : NAN;
    long q = isnan(r) ? 0 : (long)nearbyint(r / 90);
    r -= 90 * (double)q;
    r = r * DEG_TO_RAD;
    double s = sin(r), c = cos(r);
    g_quadrant(q, &s, &c);
    c = c + 0.0;
    if (s == 0)
        s = copysign(s, x);
    *s_out = s;
    *c_out = c;
}

static void g_sincosde(double x, double t, double *s_out, double *c_out)
{
    long q = isfinite(x) ? (long)nearbyint(x / 90) : 0;
    double r = x - 90 * (double)q;
    r = g_anground(r + t) * DEG_TO_RAD;
    double s = sin(r), c = cos(r);
    g_quadrant(q, &s, &c);
    c = c + 0.0;
    if (s == 0)
        s = copysign(s, x);
    *s_out = s;
    *c_out = c;
}

static double g_sincosseries(int sinp, double sinx, double cosx, const double *c, int len)
{
    int k = len, n = k - sinp;
    double ar = 2 * (cosx - sinx) * (cosx + sinx), y0, y1 = 0;
    if (n & 1) {
        k -= 1;
        y0 = c[k];
    }
    else
        y0 = 0;
    n = n / 2;
    while (n) {
        n -= 1;
        k -= 1;
        y1 = ar * y0 - y1 + c[k];
        k -= 1;
        y0 = ar * y1 - y0 + c[k];
    }
    return sinp ? 2 * sinx * cosx * y0 : cosx * (y0 - y1);
}

static double g_astroid(double x, double y)
{
    double p = g_sq(x), q = g_sq(y), r = (p + q - 1) / 6, k;
    if (!(q == 0 && r <= 0)) {
        double S = p * q / 4, r2 = g_sq(r), r3 = r * r2, disc = S * (S + 2 * r3), u = r;
        if (disc >= 0) {
            double T3 = S + r3;
            T3 += T3 < 0 ? -sqrt(disc) : sqrt(disc);
            double T = copysign(pow(fabs(T3), 1 / 3.0), T3);
            u += T + (T != 0 ? r2 / T : 0);
        }
        else {
            double ang = atan2(sqrt(-disc), -(S + r3));
            u += 2 * r * cos(ang / 3);
        }
        double v = sqrt(g_sq(u) + q), uv = u < 0 ? q / (v - u) : u + v, w = (uv - q) / (2 * v);
        k = uv / (sqrt(uv + g_sq(w)) + w);
    }
    else
        k = 0;
    return k;
}

static double g_A1m1f(double eps)
{
    static const double coeff[] = {1, 4, 64, 0, 256};
    int m = GEO_ORDER / 2;
    double t = g_polyval(m, coeff, 0, g_sq(eps)) / coeff[m + 1];
    return (t + eps) / (1 - eps);
}

/* _C1f and _C2f: the same series over their own coefficients. */
static void g_series(const double *coeff, double eps, double *c)
{
    double eps2 = g_sq(eps), d = eps;
    int o = 0;
    for (int l = 1; l <= GEO_ORDER; l++) {
        int m = (GEO_ORDER - l) / 2;
        c[l] = d * g_polyval(m, coeff, o, eps2) / coeff[o + m + 1];
        o += m + 2;
        d *= eps;
    }
}

static void g_C1f(double eps, double *c)
{
    static const double coeff[] = {-1, 6, -16, 32, -9, 64, -128, 2048, 9, -16, 768, 3, -5, 512, -7, 1280, -7, 2048};
    g_series(coeff, eps, c);
}

static double g_A2m1f(double eps)
{
    static const double coeff[] = {-11, -28, -192, 0, 256};
    int m = GEO_ORDER / 2;
    double t = g_polyval(m, coeff, 0, g_sq(eps)) / coeff[m + 1];
    return (t - eps) / (1 + eps);
}

static void g_C2f(double eps, double *c)
{
    static const double coeff[] = {1, 2, 16, 32, 35, 64, 384, 2048, 15, 80, 768, 7, 35, 512, 63, 1280, 77, 2048};
    g_series(coeff, eps, c);
}

static double g_A3f(double eps) { return g_polyval(GEO_ORDER - 1, geod.A3x, 0, eps); }

static void g_C3f(double eps, double *c)
{
    double mult = 1;
    int o = 0;
    for (int l = 1; l < GEO_ORDER; l++) {
        int m = GEO_ORDER - l - 1;
        mult *= eps;
        c[l] = mult * g_polyval(m, geod.C3x, o, eps);
        o += m + 1;
    }
}

/* _Lengths for the outputs Inverse asks of it here: the distance and the reduced length. */
static void g_lengths(double eps, double sig12, double ssig1, double csig1, double dn1, double ssig2,
                      double csig2, double dn2, int distance, int reduced, double *C1a, double *C2a,
                      double *s12b_out, double *m12b_out)
{
    double s12b = NAN, m12b = NAN, m0x = NAN, J12 = NAN, A1, A2 = NAN;
    A1 = g_A1m1f(eps);
    g_C1f(eps, C1a);
    if (reduced) {
        A2 = g_A2m1f(eps);
        g_C2f(eps, C2a);
        m0x = A1 - A2;
        A2 = 1 + A2;
    }
    A1 = 1 + A1;
    if (distance) {
        double B1 = g_sincosseries(1, ssig2, csig2, C1a, GEO_ORDER + 1) -
                    g_sincosseries(1, ssig1, csig1, C1a, GEO_ORDER + 1);
        s12b = A1 * (sig12 + B1);
        if (reduced) {
            double B2 = g_sincosseries(1, ssig2, csig2, C2a, GEO_ORDER + 1) -
                        g_sincosseries(1, ssig1, csig1, C2a, GEO_ORDER + 1);
            J12 = m0x * sig12 + (A1 * B1 - A2 * B2);
        }
    }
    else if (reduced) {
        for (int l = 1; l < GEO_ORDER; l++)
            C2a[l] = A1 * C1a[l] - A2 * C2a[l];
        J12 = m0x * sig12 + (g_sincosseries(1, ssig2, csig2, C2a, GEO_ORDER + 1) -
                             g_sincosseries(1, ssig1, csig1, C2a, GEO_ORDER + 1));
    }
    if (reduced)
        m12b = dn2 * (csig1 * ssig2) - dn1 * (ssig1 * csig2) - csig1 * csig2 * J12;
    *s12b_out = s12b;
    *m12b_out = m12b;
}

#define TINY 1.4916681462400413e-154 /* math.sqrt(sys.float_info.min) */
#define TOL0 2.220446049250313e-16   /* sys.float_info.epsilon */
#define TOL1 (200 * TOL0)
#define TOL2 1.4901161193847656e-08 /* math.sqrt(TOL0) */
#define TOLB TOL0
#define XTHRESH (1000 * TOL2)
#define MAXIT1 20
#define MAXIT2 (MAXIT1 + 53 + 10)

static double g_inverse_start(double sbet1, double cbet1, double dn1, double sbet2, double cbet2, double dn2,
                              double lam12, double slam12, double clam12, double *salp1_out,
                              double *calp1_out, double *dnm_out)
{
    double sig12 = -1, dnm = NAN, salp1, calp1, somg12, comg12;
    double sbet12 = sbet2 * cbet1 - cbet2 * sbet1, cbet12 = cbet2 * cbet1 + sbet2 * sbet1;
    double sbet12a = sbet2 * cbet1;
    sbet12a += cbet2 * sbet1;
    int shortline = cbet12 >= 0 && sbet12 < 0.5 && cbet2 * lam12 < 0.5;
    if (shortline) {
        double sbetm2 = g_sq(sbet1 + sbet2);
        sbetm2 /= sbetm2 + g_sq(cbet1 + cbet2);
        dnm = sqrt(1 + geod.ep2 * sbetm2);
        double omg12 = lam12 / (geod.f1 * dnm);
        somg12 = sin(omg12);
        comg12 = cos(omg12);
    }
    else {
        somg12 = slam12;
        comg12 = clam12;
    }
    salp1 = cbet2 * somg12;
    calp1 = comg12 >= 0 ? sbet12 + cbet2 * sbet1 * g_sq(somg12) / (1 + comg12)
                        : sbet12a - cbet2 * sbet1 * g_sq(somg12) / (1 - comg12);
    double ssig12 = py_hypot(salp1, calp1), csig12 = sbet1 * sbet2 + cbet1 * cbet2 * comg12;
    if (shortline && ssig12 < geod.etol2) {
        /* (salp2, calp2 are not needed for a distance) */
        sig12 = atan2(ssig12, csig12);
    }
    else if (fabs(geod.n) >= 0.1 || csig12 >= 0 || ssig12 >= 6 * fabs(geod.n) * GEO_PI * g_sq(cbet1)) {
    }
    else {
        /* (f > 0: the branch of an oblate ellipsoid; geodesic_setup refuses others) */
        double lam12x = atan2(-slam12, -clam12);
        double k2 = g_sq(sbet1) * geod.ep2, eps = k2 / (2 * (1 + sqrt(1 + k2)) + k2);
        double lamscale = geod.f * cbet1 * g_A3f(eps) * GEO_PI, betscale = lamscale * cbet1;
        double x = lam12x / lamscale, y = sbet12a / betscale;
        if (y > -TOL1 && x > -1 - XTHRESH) {
            salp1 = g_min(1.0, -x);
            calp1 = -sqrt(1 - g_sq(salp1));
        }
        else {
            double k = g_astroid(x, y);
            double omg12a = lamscale * (-x * k / (1 + k));
            somg12 = sin(omg12a);
            comg12 = -cos(omg12a);
            salp1 = cbet2 * somg12;
            calp1 = sbet12a - cbet2 * sbet1 * g_sq(somg12) / (1 - comg12);
        }
    }
    if (!(salp1 <= 0))
        g_norm(&salp1, &calp1);
    else {
        salp1 = 1;
        calp1 = 0;
    }
    *salp1_out = salp1;
    *calp1_out = calp1;
    *dnm_out = dnm;
    return sig12;
}

typedef struct {
    double lam12, salp2, calp2, sig12, ssig1, csig1, ssig2, csig2, eps, domg12, dlam12;
} Lambda;

static void g_lambda12(double sbet1, double cbet1, double dn1, double sbet2, double cbet2, double dn2,
                       double salp1, double calp1, double slam120, double clam120, int diffp, double *C1a,
                       double *C2a, double *C3a, Lambda *out)
{
    if (sbet1 == 0 && calp1 == 0)
        calp1 = -TINY;
    double salp0 = salp1 * cbet1, calp0 = py_hypot(calp1, salp1 * sbet1);
    double ssig1 = sbet1, somg1 = salp0 * sbet1, csig1, comg1;
    csig1 = comg1 = calp1 * cbet1;
    g_norm(&ssig1, &csig1);
    double salp2 = cbet2 != cbet1 ? salp0 / cbet2 : salp1;
    double calp2 =
        cbet2 != cbet1 || fabs(sbet2) != -sbet1
            ? sqrt(g_sq(calp1 * cbet1) +
                   (cbet1 < -sbet1 ? (cbet2 - cbet1) * (cbet1 + cbet2) : (sbet1 - sbet2) * (sbet1 + sbet2))) /
                  cbet2
            : fabs(calp1);
    double ssig2 = sbet2, somg2 = salp0 * sbet2, csig2, comg2;
    csig2 = comg2 = calp2 * cbet2;
    g_norm(&ssig2, &csig2);
    double sig12 = atan2(g_max(0.0, csig1 * ssig2 - ssig1 * csig2) + 0.0, csig1 * csig2 + ssig1 * ssig2);
    double somg12 = g_max(0.0, comg1 * somg2 - somg1 * comg2) + 0.0;
    double comg12 = comg1 * comg2 + somg1 * somg2;
    double eta = atan2(somg12 * clam120 - comg12 * slam120, comg12 * clam120 + somg12 * slam120);
    double k2 = g_sq(calp0) * geod.ep2, eps = k2 / (2 * (1 + sqrt(1 + k2)) + k2);
    g_C3f(eps, C3a);
    double B312 = g_sincosseries(1, ssig2, csig2, C3a, GEO_ORDER) - g_sincosseries(1, ssig1, csig1, C3a, GEO_ORDER);
    double domg12 = -geod.f * g_A3f(eps) * salp0 * (sig12 + B312);
    double lam12 = eta + domg12, dlam12;
    if (diffp) {
        if (calp2 == 0)
            dlam12 = -2 * geod.f1 * dn1 / sbet1;
        else {
            double unused;
            g_lengths(eps, sig12, ssig1, csig1, dn1, ssig2, csig2, dn2, 0, 1, C1a, C2a, &unused, &dlam12);
            dlam12 *= geod.f1 / (calp2 * cbet2);
        }
    }
    else
        dlam12 = NAN;
    *out = (Lambda){lam12, salp2, calp2, sig12, ssig1, csig1, ssig2, csig2, eps, domg12, dlam12};
}

/* _GenInverse's s12 (DISTANCE only), in the ellipsoid's unit. */
static double g_inverse_distance(double lat1, double lon1, double lat2, double lon2)
{
    double lon12, lon12s;
    g_angdiff(lon1, lon2, &lon12, &lon12s);
    double lonsign = copysign(1, lon12);
    lon12 = lonsign * lon12;
    lon12s = lonsign * lon12s;
    double lam12 = lon12 * DEG_TO_RAD, slam12, clam12;
    g_sincosde(lon12, lon12s, &slam12, &clam12);
    lon12s = (180 - lon12) - lon12s;
    lat1 = g_anground(fabs(lat1) > 90 ? NAN : lat1);
    lat2 = g_anground(fabs(lat2) > 90 ? NAN : lat2);
    if (fabs(lat1) < fabs(lat2) || isnan(lat2)) {
        double t = lat1;
        lat1 = lat2;
        lat2 = t;
    }
    double latsign = copysign(1, -lat1);
    lat1 *= latsign;
    lat2 *= latsign;
    double sbet1, cbet1, sbet2, cbet2;
    g_sincosd(lat1, &sbet1, &cbet1);
    sbet1 *= geod.f1;
    g_norm(&sbet1, &cbet1);
    cbet1 = g_max(TINY, cbet1);
    g_sincosd(lat2, &sbet2, &cbet2);
    sbet2 *= geod.f1;
    g_norm(&sbet2, &cbet2);
    cbet2 = g_max(TINY, cbet2);
    if (cbet1 < -sbet1) {
        if (cbet2 == cbet1)
            sbet2 = copysign(sbet1, sbet2);
    }
    else if (fabs(sbet2) == -sbet1)
        cbet2 = cbet1;
    double dn1 = sqrt(1 + geod.ep2 * g_sq(sbet1)), dn2 = sqrt(1 + geod.ep2 * g_sq(sbet2));
    double C1a[GEO_ORDER + 1] = {0}, C2a[GEO_ORDER + 1] = {0}, C3a[GEO_ORDER] = {0};
    double s12x = NAN, m12x = NAN, sig12, calp1, salp1;
    int meridian = lat1 == -90 || slam12 == 0;
    if (meridian) {
        calp1 = clam12;
        salp1 = slam12;
        double calp2 = 1.0, ssig1 = sbet1, csig1 = calp1 * cbet1, ssig2 = sbet2, csig2 = calp2 * cbet2;
        sig12 = atan2(g_max(0.0, csig1 * ssig2 - ssig1 * csig2) + 0.0, csig1 * csig2 + ssig1 * ssig2);
        g_lengths(geod.n, sig12, ssig1, csig1, dn1, ssig2, csig2, dn2, 1, 1, C1a, C2a, &s12x, &m12x);
        if (sig12 < TOL2 || m12x >= 0) {
            if (sig12 < 3 * TINY || (sig12 < TOL0 && (s12x < 0 || m12x < 0)))
                sig12 = m12x = s12x = 0.0;
            m12x *= geod.b;
            s12x *= geod.b;
        }
        else
            meridian = 0;
    }
    if (!meridian && sbet1 == 0 && (geod.f <= 0 || lon12s >= geod.f * 180)) {
        s12x = geod.a * lam12;
    }
    else if (!meridian) {
        double dnm;
        sig12 = g_inverse_start(sbet1, cbet1, dn1, sbet2, cbet2, dn2, lam12, slam12, clam12, &salp1, &calp1, &dnm);
        if (sig12 >= 0)
            s12x = sig12 * geod.b * dnm;
        else {
            int numit = 0, tripn = 0, tripb = 0;
            double salp1a = TINY, calp1a = 1.0, salp1b = TINY, calp1b = -1.0;
            Lambda L;
            while (1) {
                g_lambda12(sbet1, cbet1, dn1, sbet2, cbet2, dn2, salp1, calp1, slam12, clam12, numit < MAXIT1,
                           C1a, C2a, C3a, &L);
                double v = L.lam12, dv = L.dlam12;
                if (tripb || !(fabs(v) >= (tripn ? 8 : 1) * TOL0) || numit == MAXIT2)
                    break;
                if (v > 0 && (numit > MAXIT1 || calp1 / salp1 > calp1b / salp1b)) {
                    salp1b = salp1;
                    calp1b = calp1;
                }
                else if (v < 0 && (numit > MAXIT1 || calp1 / salp1 < calp1a / salp1a)) {
                    salp1a = salp1;
                    calp1a = calp1;
                }
                numit += 1;
                if (numit < MAXIT1 && dv > 0) {
                    double dalp1 = -v / dv;
                    if (fabs(dalp1) < GEO_PI) {
                        double sdalp1 = sin(dalp1), cdalp1 = cos(dalp1), nsalp1 = salp1 * cdalp1 + calp1 * sdalp1;
                        if (nsalp1 > 0) {
                            calp1 = calp1 * cdalp1 - salp1 * sdalp1;
                            salp1 = nsalp1;
                            g_norm(&salp1, &calp1);
                            tripn = fabs(v) <= 16 * TOL0;
                            continue;
                        }
                    }
                }
                salp1 = (salp1a + salp1b) / 2;
                calp1 = (calp1a + calp1b) / 2;
                g_norm(&salp1, &calp1);
                tripn = 0;
                tripb = fabs(salp1a - salp1) + (calp1a - calp1) < TOLB || fabs(salp1 - salp1b) + (calp1 - calp1b) < TOLB;
            }
            double unused;
            g_lengths(L.eps, L.sig12, L.ssig1, L.csig1, dn1, L.ssig2, L.csig2, dn2, 1, 0, C1a, C2a, &s12x, &unused);
            s12x *= geod.b;
        }
    }
    return 0.0 + s12x;
}

/* geodesic_setup(a, f, f1, ep2, n, b, etol2, A3x, C3x): the ellipsoid of a geographiclib Geodesic (its
   own attributes, so that nothing is computed twice in two ways). */
/* The n numbers of a sequence (the geographiclib object's coefficients) into out: 0, or -1 with an
   exception. */
static int doubles_of(PyObject *seq, double *out, Py_ssize_t n)
{
    if (!PySequence_Check(seq) || PySequence_Size(seq) != n) {
        PyErr_SetString(PyExc_ValueError, "geodesic_setup: an oblate ellipsoid of order 6");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PySequence_GetItem(seq, i);
        if (v == NULL)
            return -1;
        out[i] = PyFloat_AsDouble(v);
        Py_DECREF(v);
        if (out[i] == -1.0 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *geodesic_setup(PyObject *self, PyObject *args)
{
    PyObject *A3x, *C3x;
    double a, f, f1, ep2, n, b, etol2;
    if (!PyArg_ParseTuple(args, "dddddddOO", &a, &f, &f1, &ep2, &n, &b, &etol2, &A3x, &C3x))
        return NULL;
    if (!(f > 0)) {
        PyErr_SetString(PyExc_ValueError, "geodesic_setup: an oblate ellipsoid of order 6");
        return NULL;
    }
    double A3[GEO_ORDER], C3[(GEO_ORDER * (GEO_ORDER - 1)) / 2];
    if (doubles_of(A3x, A3, GEO_ORDER) < 0 || doubles_of(C3x, C3, (GEO_ORDER * (GEO_ORDER - 1)) / 2) < 0)
        return NULL;
    if (math_hypot == NULL) {
        PyObject *math = PyImport_ImportModule("math");
        if (math == NULL)
            return NULL;
        math_hypot = PyObject_GetAttrString(math, "hypot");
        Py_DECREF(math);
        if (math_hypot == NULL)
            return NULL;
    }
    geod.a = a;
    geod.f = f;
    geod.f1 = f1;
    geod.ep2 = ep2;
    geod.n = n;
    geod.b = b;
    geod.etol2 = etol2;
    memcpy(geod.A3x, A3, sizeof A3);
    memcpy(geod.C3x, C3, sizeof C3);
    geod.ready = 1;
    Py_RETURN_NONE;
}

static PyObject *geodesic_km(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "geodesic_km(lat1, lon1, lat2, lon2)");
        return NULL;
    }
    if (!geod.ready) {
        PyErr_SetString(PyExc_RuntimeError, "geodesic_km: geodesic_setup first");
        return NULL;
    }
    double v[4];
    for (int i = 0; i < 4; i++)
        if ((v[i] = PyFloat_AsDouble(args[i])) == -1.0 && PyErr_Occurred())
            return NULL;
    geod_failed = 0;
    double s12 = g_inverse_distance(v[0], v[1], v[2], v[3]);
    return geod_failed ? NULL : PyFloat_FromDouble(s12);
}

/* counter[key] += n, as a Counter does (a key it lacks counts 0). */
static int add_count(PyObject *counter, PyObject *key, Py_ssize_t n)
{
    PyObject *old = PyObject_GetItem(counter, key);
    if (old == NULL)
        return -1;
    PyObject *by = PyLong_FromSsize_t(n), *sum = by != NULL ? PyNumber_Add(old, by) : NULL;
    Py_DECREF(old);
    Py_XDECREF(by);
    int done = sum != NULL ? PyObject_SetItem(counter, key, sum) : -1;
    Py_XDECREF(sum);
    return done;
}

/* select_signins(events, evaluate_failures, newest) -> (wanted, wanted_at, newest, ignored, users, ips)
   | None: Engine.process's first loop over a batch, where no network is trusted. The sign-ins to evaluate
   (each failure left out unless ``evaluate_failures``), where each is in ``events`` (None while that is
   where it is: nothing before it left out), the newest time (from ``newest`` on), how many failures
   were left out, and the sign-ins' users and addresses. None when a sign-in is not as decoding makes
   them (a tuple of SIGNIN_FIELDS, its time a float, its success a bool): the loop then does it.
   Compiled, that loop boxed the newest time again for each comparison, and an index for each sign-in
   once a failure had come: 445 instructions a sign-in. */
static PyObject *select_signins(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "select_signins(events, evaluate_failures, newest): events a list");
        return NULL;
    }
    int evaluate_failures = PyObject_IsTrue(args[1]);
    double newest = PyFloat_AsDouble(args[2]);
    if (evaluate_failures < 0 || (newest == -1.0 && PyErr_Occurred()))
        return NULL;
    PyObject *events = args[0];
    Py_ssize_t n = PyList_GET_SIZE(events), ignored = 0, first_ignored = n, last_wanted = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(events, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != SIGNIN_FIELDS ||
            !PyFloat_CheckExact(PyTuple_GET_ITEM(row, 2)))
            Py_RETURN_NONE;
        PyObject *ok = PyTuple_GET_ITEM(row, 4);
        if (ok != Py_True && ok != Py_False)
            Py_RETURN_NONE;
        if (ok == Py_False && !evaluate_failures) {
            ignored++;
            first_ignored = first_ignored < i ? first_ignored : i;
        }
        else
            last_wanted = i;
    }
    Py_ssize_t kept = n - ignored;
    PyObject *wanted = PyList_New(kept), *users = PyList_New(kept), *ips = PyList_New(kept);
    PyObject *at = first_ignored < last_wanted ? PyList_New(kept) : Py_NewRef(Py_None), *out = NULL;
    if (wanted == NULL || users == NULL || ips == NULL || at == NULL)
        goto done;
    for (Py_ssize_t i = 0, j = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(events, i);
        double t = PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(row, 2));
        if (t > newest)
            newest = t;
        if (PyTuple_GET_ITEM(row, 4) == Py_False && !evaluate_failures)
            continue;
        if (at != Py_None) {
            PyObject *where = PyLong_FromSsize_t(i);
            if (where == NULL)
                goto done;
            PyList_SET_ITEM(at, j, where);
        }
        PyList_SET_ITEM(wanted, j, Py_NewRef(row));
        PyList_SET_ITEM(users, j, Py_NewRef(PyTuple_GET_ITEM(row, 0)));
        PyList_SET_ITEM(ips, j, Py_NewRef(PyTuple_GET_ITEM(row, 1)));
        j++;
    }
    out = Py_BuildValue("(OOdnOO)", wanted, at, newest, ignored, users, ips);
done:
    Py_XDECREF(wanted);
    Py_XDECREF(users);
    Py_XDECREF(ips);
    Py_XDECREF(at);
    return out;
}

/* count_into(counter, items): counter.update(items) for a batch's outcomes (engine.Engine.process):
   each item compared by identity with the few kinds met so far, where Counter.update hashed, looked up
   and stored each (460 instructions an item; a list.count of each kind, before, compared every item
   with it: 5% of a replay worker's instructions). */
/* ``arg``'s buffer, of 4-byte integers: 0, or -1 with an error set (and nothing held). */
static int int32_buffer(PyObject *arg, Py_buffer *view, const char *what)
{
    if (PyObject_GetBuffer(arg, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len % 4 != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: a buffer of 4-byte integers", what);
        return -1;
    }
    return 0;
}

/* utc_text: days since 1970-01-01 -> the proleptic Gregorian date (H. Hinnant's civil_from_days). */
static void civil_from_days(long long z, long long *y, unsigned *m, unsigned *d)
{
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (long long)yoe + era * 400 + (*m <= 2);
}

#define UTC_TEXT_END 253402300800LL /* 10000-01-01T00:00:00Z, in seconds */

static PyObject *utc_text(PyObject *self, PyObject *arg)
{
    long long micros;
    if (PyLong_CheckExact(arg)) { /* Python: round(n * 1_000_000), exact */
        int overflow;
        long long seconds = PyLong_AsLongLongAndOverflow(arg, &overflow);
        if (seconds == -1 && PyErr_Occurred())
            return NULL;
        if (overflow || seconds < 0 || seconds >= UTC_TEXT_END)
            Py_RETURN_NONE;
        micros = seconds * 1000000;
    } else if (PyFloat_CheckExact(arg)) {
        /* Python: round(x * 1_000_000), the same product rounded half to even, as nearbyint does in
           the default rounding mode */
        double m = nearbyint(PyFloat_AS_DOUBLE(arg) * 1e6);
        if (!(m >= 0.0 && m < (double)UTC_TEXT_END * 1e6))
            Py_RETURN_NONE;
        micros = (long long)m;
    } else {
        Py_RETURN_NONE;
    }
    long long seconds = micros / 1000000, year;
    unsigned month, day, fraction = (unsigned)(micros % 1000000), second = (unsigned)(seconds % 86400);
    civil_from_days(seconds / 86400, &year, &month, &day);
    /* "YYYY-MM-DDTHH:MM:SS[.ffffff]Z", written digit by digit (snprintf took 3,600 instructions a call) */
    char text[32] = "0000-00-00T00:00:00.000000";
    unsigned fields[6] = {(unsigned)year, month, day, second / 3600, second / 60 % 60, second % 60};
    static const int ends[6] = {4, 7, 10, 13, 16, 19}; /* each field's end in the text */
    for (int f = 0; f < 6; f++)
        for (int i = ends[f] - 1, v = (int)fields[f]; v; i--, v /= 10)
            text[i] = (char)('0' + v % 10);
    int n = 19;
    if (fraction) {
        for (int i = 26; i > 20; i--, fraction /= 10)
            text[i - 1] = (char)('0' + fraction % 10);
        n = 26;
        while (text[n - 1] == '0')
            n--;
    }
    text[n++] = 'Z';
    PyObject *out = PyUnicode_New(n, 127);
    if (out != NULL)
        memcpy(PyUnicode_1BYTE_DATA(out), text, n);
    return out;
}

static PyObject *int32_max(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (int32_buffer(arg, &view, "int32_max") < 0)
        return NULL;
    int32_t best = view.len ? INT32_MIN : -1, value;
    const char *data = view.buf;
    for (Py_ssize_t i = 0; i < view.len; i += 4) {
        memcpy(&value, data + i, 4);
        if (value > best)
            best = value;
    }
    PyBuffer_Release(&view);
    return PyLong_FromLong(best);
}

static PyObject *int32_ascending(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (int32_buffer(arg, &view, "int32_ascending") < 0)
        return NULL;
    int32_t last = INT32_MIN, value;
    int ascending = 1;
    const char *data = view.buf;
    for (Py_ssize_t i = 0; i < view.len && ascending; i += 4) {
        memcpy(&value, data + i, 4);
        ascending = value >= last;
        last = value;
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(ascending);
}

static PyObject *count_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "count_into(counter, items): items a list");
        return NULL;
    }
    PyObject *counter = args[0], *items = args[1], *kinds[16];
    Py_ssize_t counts[16], distinct = 0, n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_ssize_t k = 0;
        while (k < distinct && kinds[k] != item) /* (by identity: the outcomes are a few constants) */
            k++;
        if (k == distinct) {
            if (distinct == 16) { /* more kinds than that: each of the others on its own */
                if (add_count(counter, item, 1) < 0)
                    return NULL;
                continue;
            }
            kinds[distinct] = item;
            counts[distinct++] = 0;
        }
        counts[k]++;
    }
    for (Py_ssize_t k = 0; k < distinct; k++) /* (equal texts of different objects add up here) */
        if (add_count(counter, kinds[k], counts[k]) < 0)
            return NULL;
    Py_RETURN_NONE;
}

/* Kafka record batches (message format v2), a batch at a time, for detector/kafkarecords.py.
   kafka-python writes and reads each record in Python: about 16 us a record written (its accumulator,
   builder and future) and 8 us a record read (its batch iterator and ConsumerRecord), most of the
   Kafka path's cost beyond the engine's. Varints are zigzag-encoded, as the protocol has them. */

static inline uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline Py_ssize_t varint_size(int64_t v)
{
    uint64_t z = zigzag(v);
    Py_ssize_t n = 1;
    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

static inline char *put_varint(char *p, int64_t v)
{
    uint64_t z = zigzag(v);
    while (z >= 0x80) {
        *p++ = (char)((z & 0x7F) | 0x80);
        z >>= 7;
    }
    *p++ = (char)z;
    return p;
}

#define BATCH_HEADER 61 /* DefaultRecordBase.HEADER_STRUCT.size */

/* The size of a record's body (after its length): attributes, timestamp delta (0), offset delta, key,
   value (each a length, -1 for None, then its bytes), no headers. */
static Py_ssize_t record_body(PyObject *k, PyObject *v, Py_ssize_t offset_delta)
{
    Py_ssize_t body = 2 + varint_size(offset_delta) + 1;
    body += k == Py_None ? 1 : varint_size(PyBytes_GET_SIZE(k)) + PyBytes_GET_SIZE(k);
    body += v == Py_None ? 1 : varint_size(PyBytes_GET_SIZE(v)) + PyBytes_GET_SIZE(v);
    return body;
}

/* record_batches(keys, values, max_bytes) -> list[(bytearray, count)]: the records as the bodies of
   record batches, each after 61 zero bytes for its header (kafkarecords.PackedRecords writes it), each
   record's timestamp delta 0 and offset delta its place in its batch, no headers. A batch takes records
   while it stays within max_bytes, and always its first, as kafka-python's DefaultRecordBatchBuilder
   does: the same bytes (tests/unit/test_kafkarecords.py). */
static PyObject *record_batches(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[0]) || !PyList_Check(args[1]) ||
        PyList_GET_SIZE(args[0]) != PyList_GET_SIZE(args[1])) {
        PyErr_SetString(PyExc_TypeError, "record_batches(keys, values, max_bytes): two lists of one length");
        return NULL;
    }
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[2]);
    if (max_bytes == -1 && PyErr_Occurred())
        return NULL;
    PyObject *keys = args[0], *values = args[1];
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i), *v = PyList_GET_ITEM(values, i);
        if ((k != Py_None && !PyBytes_Check(k)) || (v != Py_None && !PyBytes_Check(v))) {
            PyErr_SetString(PyExc_TypeError, "record_batches: each key and value bytes or None");
            return NULL;
        }
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t start = 0;
    while (start < n) {
        /* the records of this batch, and its size */
        Py_ssize_t size = BATCH_HEADER, stop = start;
        for (; stop < n; stop++) {
            Py_ssize_t body = record_body(PyList_GET_ITEM(keys, stop), PyList_GET_ITEM(values, stop), stop - start);
            Py_ssize_t record = varint_size(body) + body;
            if (stop > start && size + record > max_bytes)
                break;
            size += record;
        }
        PyObject *buffer = PyByteArray_FromStringAndSize(NULL, size);
        if (buffer == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        char *base = PyByteArray_AS_STRING(buffer), *p = base + BATCH_HEADER;
        memset(base, 0, BATCH_HEADER);
        for (Py_ssize_t i = start; i < stop; i++) {
            PyObject *k = PyList_GET_ITEM(keys, i), *v = PyList_GET_ITEM(values, i);
            p = put_varint(p, record_body(k, v, i - start));
            *p++ = 0; /* attributes */
            *p++ = 0; /* timestamp delta */
            p = put_varint(p, i - start);
            PyObject *parts[2] = {k, v};
            for (int j = 0; j < 2; j++) {
                if (parts[j] == Py_None) {
                    p = put_varint(p, -1);
                } else {
                    Py_ssize_t len = PyBytes_GET_SIZE(parts[j]);
                    p = put_varint(p, len);
                    memcpy(p, PyBytes_AS_STRING(parts[j]), (size_t)len);
                    p += len;
                }
            }
            *p++ = 0; /* no headers */
        }
        PyObject *item = Py_BuildValue("(Nn)", buffer, stop - start);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
        start = stop;
    }
    return out;
}

/* A varint at *pos, within end; -1 with ValueError set when it runs past end or over 10 bytes. */
static int get_varint(const unsigned char *buf, Py_ssize_t end, Py_ssize_t *pos, int64_t *value)
{
    uint64_t z = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= end) {
            PyErr_SetString(PyExc_ValueError, "a varint runs past the end of its record batch");
            return -1;
        }
        unsigned char b = buf[(*pos)++];
        z |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *value = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
            return 0;
        }
    }
    PyErr_SetString(PyExc_ValueError, "a varint longer than 10 bytes");
    return -1;
}

/* Bytes of length len at *pos (None for -1), within end. */
static PyObject *get_bytes(const unsigned char *buf, Py_ssize_t end, Py_ssize_t *pos, int64_t len, Py_ssize_t *size)
{
    if (len < 0) {
        *size = -1;
        return Py_NewRef(Py_None);
    }
    if (len > end - *pos) {
        PyErr_SetString(PyExc_ValueError, "a field runs past the end of its record batch");
        return NULL;
    }
    PyObject *b = PyBytes_FromStringAndSize((const char *)buf + *pos, (Py_ssize_t)len);
    *pos += (Py_ssize_t)len;
    *size = (Py_ssize_t)len;
    return b;
}

/* decode_records(buffer, pos, count, base_offset, first_timestamp, max_timestamp, log_append_time,
   topic, partition, leader_epoch, cls) -> list: the count records of an uncompressed (or already
   decompressed) v2 batch's body from pos, each as the ConsumerRecord (cls) kafka-python's fetcher
   makes of it, deserializers none. ValueError where the bytes are not records (kafkarecords raises
   CorruptRecordError, as kafka-python's reader does). */
static PyObject *decode_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 11 || !PyType_Check(args[10]) || !PyType_IsSubtype((PyTypeObject *)args[10], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "decode_records(buffer, pos, count, base_offset, first_timestamp, "
                                         "max_timestamp, log_append_time, topic, partition, leader_epoch, cls)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]), count = PyLong_AsSsize_t(args[2]);
    long long base_offset = PyLong_AsLongLong(args[3]), first_ts = PyLong_AsLongLong(args[4]),
              max_ts = PyLong_AsLongLong(args[5]);
    int log_append = PyObject_IsTrue(args[6]);
    if (PyErr_Occurred() || log_append < 0)
        return NULL;
    PyObject *topic = args[7], *partition = args[8], *leader_epoch = args[9];
    PyTypeObject *cls = (PyTypeObject *)args[10];
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    PyObject *out = PyList_New(0), *timestamp_type = PyLong_FromLong(log_append ? 1 : 0);
    if (out == NULL || timestamp_type == NULL || pos < 0 || count < 0)
        goto fail;
    for (Py_ssize_t r = 0; r < count; r++) {
        int64_t length, attributes, ts_delta, offset_delta, key_len, value_len, header_count;
        if (get_varint(buf, end, &pos, &length) < 0)
            goto fail;
        Py_ssize_t start = pos;
        if (get_varint(buf, end, &pos, &attributes) < 0 || get_varint(buf, end, &pos, &ts_delta) < 0 ||
            get_varint(buf, end, &pos, &offset_delta) < 0 || get_varint(buf, end, &pos, &key_len) < 0)
            goto fail;
        Py_ssize_t key_size, value_size, header_size = -1;
        PyObject *key = get_bytes(buf, end, &pos, key_len, &key_size), *value = NULL, *headers = NULL;
        if (key == NULL)
            goto fail;
        if (get_varint(buf, end, &pos, &value_len) < 0 || (value = get_bytes(buf, end, &pos, value_len, &value_size)) == NULL ||
            get_varint(buf, end, &pos, &header_count) < 0)
            goto fail_record;
        if (header_count < 0) {
            PyErr_Format(PyExc_ValueError, "invalid number of record headers %lld", (long long)header_count);
            goto fail_record;
        }
        headers = PyList_New(0);
        if (headers == NULL)
            goto fail_record;
        for (int64_t h = 0; h < header_count; h++) {
            int64_t h_key_len, h_value_len;
            if (get_varint(buf, end, &pos, &h_key_len) < 0)
                goto fail_record;
            if (h_key_len < 0 || h_key_len > end - pos) {
                PyErr_SetString(PyExc_ValueError, "invalid record header key size");
                goto fail_record;
            }
            PyObject *h_key = PyUnicode_DecodeUTF8((const char *)buf + pos, (Py_ssize_t)h_key_len, NULL);
            if (h_key == NULL)
                goto fail_record;
            pos += (Py_ssize_t)h_key_len;
            Py_ssize_t h_size;
            PyObject *h_value = NULL;
            if (get_varint(buf, end, &pos, &h_value_len) < 0 ||
                (h_value = get_bytes(buf, end, &pos, h_value_len, &h_size)) == NULL) {
                Py_DECREF(h_key);
                goto fail_record;
            }
            PyObject *pair = PyTuple_Pack(2, h_key, h_value);
            Py_DECREF(h_key);
            Py_DECREF(h_value);
            if (pair == NULL || PyList_Append(headers, pair) < 0) {
                Py_XDECREF(pair);
                goto fail_record;
            }
            Py_DECREF(pair);
            /* (the key's length in UTF-8 is its length in bytes) */
            header_size = (header_size < 0 ? 0 : header_size) + (Py_ssize_t)h_key_len + (h_size < 0 ? 0 : h_size);
        }
        if (pos - start != length) {
            PyErr_Format(PyExc_ValueError, "invalid record size: expected to read %lld bytes in record payload, "
                         "but instead read %zd", (long long)length, pos - start);
            goto fail_record;
        }
        PyObject *row = cls->tp_alloc(cls, 13);
        if (row == NULL)
            goto fail_record;
        PyTuple_SET_ITEM(row, 0, Py_NewRef(topic));
        PyTuple_SET_ITEM(row, 1, Py_NewRef(partition));
        PyTuple_SET_ITEM(row, 2, Py_NewRef(leader_epoch));
        PyTuple_SET_ITEM(row, 3, PyLong_FromLongLong(base_offset + offset_delta));
        PyTuple_SET_ITEM(row, 4, PyLong_FromLongLong(log_append ? max_ts : first_ts + ts_delta));
        PyTuple_SET_ITEM(row, 5, Py_NewRef(timestamp_type));
        PyTuple_SET_ITEM(row, 6, key);
        PyTuple_SET_ITEM(row, 7, value);
        PyTuple_SET_ITEM(row, 8, headers);
        PyTuple_SET_ITEM(row, 9, Py_NewRef(Py_None)); /* a v2 record has no checksum of its own */
        PyTuple_SET_ITEM(row, 10, PyLong_FromSsize_t(key_size));
        PyTuple_SET_ITEM(row, 11, PyLong_FromSsize_t(value_size));
        PyTuple_SET_ITEM(row, 12, PyLong_FromSsize_t(header_size));
        if (PyTuple_GET_ITEM(row, 3) == NULL || PyTuple_GET_ITEM(row, 4) == NULL || PyTuple_GET_ITEM(row, 10) == NULL ||
            PyTuple_GET_ITEM(row, 11) == NULL || PyTuple_GET_ITEM(row, 12) == NULL || PyList_Append(out, row) < 0) {
            Py_DECREF(row);
            goto fail;
        }
        Py_DECREF(row);
        continue;
    fail_record:
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(headers);
        goto fail;
    }
    PyBuffer_Release(&view);
    Py_DECREF(timestamp_type);
    return out;
fail:
    PyBuffer_Release(&view);
    Py_XDECREF(timestamp_type);
    Py_XDECREF(out);
    return NULL;
}

/* pymalloc's arenas (1 MiB each in CPython 3.11) carved out of regions that the kernel is asked
   (madvise) to back with 2 MiB pages: transparent huge pages, where the system leaves them to each
   program. A replay's account states are millions of small objects over hundreds of MiB, and it spends
   most of its time waiting on fetching them; with 4 KiB pages nearly every such fetch also misses the
   processor's cache of address translations, and on a virtual machine a translation walks two page
   tables. A freed arena goes to a list for the next one, not back to the system (the process keeps its
   peak); arenas made before, and any of another size, go through the allocator that was in place. */
#ifdef MADV_HUGEPAGE
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_REGION ((size_t)64 << 20)
static PyObjectArenaAllocator plain_arenas;
static char *regions[4096]; /* (HUGE_REGION bytes each: 256 GiB in all) */
static int region_count;
static char *region_next, *region_end;
static size_t arena_bytes;
static void *spare_arenas; /* freed arenas, each holding the next one's address in its first bytes */

/* A new region (2 MiB-aligned) into region_next..region_end: 0, or -1. */
static int new_region(void)
{
    if (region_count == (int)(sizeof(regions) / sizeof(regions[0])))
        return -1;
    size_t mapped = HUGE_REGION + HUGE_PAGE;
    char *raw = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    char *start = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (start > raw)
        munmap(raw, (size_t)(start - raw));
    if (start + HUGE_REGION < raw + mapped)
        munmap(start + HUGE_REGION, (size_t)(raw + mapped - (start + HUGE_REGION)));
    madvise(start, HUGE_REGION, MADV_HUGEPAGE); /* (refused: the region still serves, in small pages) */
    regions[region_count++] = region_next = start;
    region_end = start + HUGE_REGION;
    return 0;
}

static void *huge_arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (arena_bytes == 0)
        arena_bytes = size;
    if (size != arena_bytes || HUGE_REGION % size != 0)
        return plain_arenas.alloc(plain_arenas.ctx, size);
    void *arena = spare_arenas;
    if (arena != NULL) {
        memcpy(&spare_arenas, arena, sizeof(void *));
        return arena;
    }
    if (region_next == region_end && new_region() < 0)
        return plain_arenas.alloc(plain_arenas.ctx, size);
    arena = region_next;
    region_next += size;
    return arena;
}

static void huge_arena_free(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    if (size == arena_bytes)
        for (int i = 0; i < region_count; i++)
            if ((char *)ptr >= regions[i] && (char *)ptr < regions[i] + HUGE_REGION) {
                memcpy(ptr, &spare_arenas, sizeof(void *));
                spare_arenas = ptr;
                return;
            }
    plain_arenas.free(plain_arenas.ctx, ptr, size);
}
#endif

/* huge_arenas() -> bool: pymalloc's arenas from now on in huge pages (above); False where this build
   cannot ask for them. A second call changes nothing. */
static PyObject *huge_arenas(PyObject *self, PyObject *unused)
{
#ifdef MADV_HUGEPAGE
    if (plain_arenas.alloc == NULL) {
        PyObject_GetArenaAllocator(&plain_arenas);
        PyObjectArenaAllocator huge = {NULL, huge_arena_alloc, huge_arena_free};
        PyObject_SetArenaAllocator(&huge);
    }
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"huge_arenas", huge_arenas, METH_NOARGS,
     "huge_arenas() -> bool: pymalloc's arenas from now on in regions of 2 MiB pages (madvise)."},
    {"record_batches", (PyCFunction)(void (*)(void))record_batches, METH_FASTCALL,
     "record_batches(keys, values, max_bytes) -> list[(bytearray, int)]: Kafka v2 record batch bodies "
     "(after a blank header), as kafkarecords.record_batches."},
    {"decode_records", (PyCFunction)(void (*)(void))decode_records, METH_FASTCALL,
     "decode_records(buffer, pos, count, base_offset, first_timestamp, max_timestamp, log_append_time, "
     "topic, partition, leader_epoch, cls) -> list: a v2 record batch's records as kafka-python's "
     "ConsumerRecords."},
    {"geodesic_setup", geodesic_setup, METH_VARARGS,
     "geodesic_setup(a, f, f1, ep2, n, b, etol2, A3x, C3x) -> None: the ellipsoid of geodesic_km, from a "
     "geographiclib Geodesic's own attributes."},
    {"geodesic_km", (PyCFunction)(void (*)(void))geodesic_km, METH_FASTCALL,
     "geodesic_km(lat1, lon1, lat2, lon2) -> float: geographiclib's Geodesic.Inverse(...)['s12'], bit for bit."},
    {"select_signins", (PyCFunction)(void (*)(void))select_signins, METH_FASTCALL,
     "select_signins(events, evaluate_failures, newest) -> (wanted, wanted_at, newest, ignored, users, ips) "
     "| None: Engine.process's first loop, where no network is trusted."},
    {"count_into", (PyCFunction)(void (*)(void))count_into, METH_FASTCALL,
     "count_into(counter, items) -> None: as counter.update(items), for a list of a few kinds of item."},
    {"index_locations", (PyCFunction)(void (*)(void))index_locations, METH_FASTCALL,
     "index_locations(rows, latitude, longitude, radius_km, city, country, names_decoded, names_text, "
     "name_starts, default_radius, coarse_radius, database, cls, slots) -> list: as GeoIP._location of "
     "RecordIndex.fields(rows)."},
    {"utc_text", utc_text, METH_O,
     "utc_text(epoch_s) -> str | None: as model.utc_text, for instants from 1970 to 9999; None for others."},
    {"int32_max", int32_max, METH_O, "int32_max(buffer) -> int: the largest of its int32s, -1 if none."},
    {"int32_ascending", int32_ascending, METH_O,
     "int32_ascending(buffer) -> bool: whether each of its int32s is at least the one before."},
    {"make", (PyCFunction)(void (*)(void))make, METH_FASTCALL,
     "make(cls, *fields) -> cls: as tuple.__new__(cls, fields)."},
    {"make_slotted", (PyCFunction)(void (*)(void))make_slotted, METH_FASTCALL,
     "make_slotted(cls, slots, *values) -> cls: object.__new__(cls), each slot descriptor set to its value."},
    {"tree_find", tree_find, METH_VARARGS,
     "tree_find(tree, addresses, node_count, record_size, ipv4_start) -> bytearray: as "
     "geoip.SearchTree.find (addresses 4 bytes each, big-endian; offsets as int64, -1 for none)."},
    {"tree_locate", tree_locate, METH_VARARGS,
     "tree_locate(ips, tree, node_count, record_size, ipv4_start, ip_version, special4, special6, "
     "index_offsets, index_places) -> (offsets, places): as geoip.SearchTree.locate_text."},
    {"plain_stamp", plain_stamp, METH_O,
     "plain_stamp(text) -> float | None: codec.parse_timestamp of the common timestamp shape, else None."},
    {"decode_canonical", decode_canonical, METH_VARARGS,
     "decode_canonical(raws, max_bytes, max_user_chars, max_field_chars, max_depth, signin_type) -> list: the "
     "SignIn of each line of the common canonical shape, None for any other (for the Python decoder)."},
    {"place_key", (PyCFunction)(void (*)(void))place_key, METH_FASTCALL,
     "place_key(latitude, longitude, country, city) -> str: as model.place_key."},
    {"advance_run", (PyCFunction)(void (*)(void))advance_run, METH_FASTCALL,
     "advance_run(start, wanted, located, held, changes, outcomes, visit_cls, state_cls, max_speed_kmh, "
     "min_distance_km, history_size, history_window_s, screen_margin, raw_tail, recent_ids, "
     "earth_radius_km) -> int: the sign-ins from start that the rule's quick path decides, as "
     "Engine.process; where it stopped."},
    {"all_made", (PyCFunction)(void (*)(void))all_made, METH_FASTCALL,
     "all_made(rows, cls, field) -> bool: every row exactly a cls, its item field not None."},
    {"objects", (PyCFunction)(void (*)(void))objects, METH_FASTCALL,
     "objects(raws, max_bytes) -> range | list[int] | None: the positions of the bytes that start with '{' "
     "within max_bytes; range(len(raws)) when all of them do; None when one is not bytes."},
    {"split_lines", (PyCFunction)split_lines, METH_O,
     "split_lines(block) -> list[bytes]: block.split(b'\\n'), each newline found by memchr."},
    {"rows_wanted", (PyCFunction)(void (*)(void))rows_wanted, METH_FASTCALL,
     "rows_wanted(places, known) -> list[int]: the rows (>= 0) of the int64 buffer places that the dict known "
     "lacks, each once, in the order met."},
    {"place_each", (PyCFunction)(void (*)(void))place_each, METH_FASTCALL,
     "place_each(keys, places, by_place, into) -> list[int]: into[key] = by_place[place] for each key whose "
     "place is >= 0; where the other keys are."},
    {"get_each", (PyCFunction)(void (*)(void))get_each, METH_FASTCALL,
     "get_each(dict, keys, default) -> (values, missing): each key's value (default where there is none) "
     "and the places of those without one."},
    {"index_add", (PyCFunction)(void (*)(void))index_add, METH_FASTCALL,
     "index_add(marks, slots, mark, slot) -> bool: state._Index.add's probe and store; True when it "
     "took an empty entry."},
    {"index_find", (PyCFunction)(void (*)(void))index_find, METH_FASTCALL,
     "index_find(marks, slots, mark) -> list[int]: the slots stored under mark, in probe order."},
    {"index_remove", (PyCFunction)(void (*)(void))index_remove, METH_FASTCALL,
     "index_remove(marks, slots, mark, slot) -> None: state._Index.remove."},
    {"index_add_many", (PyCFunction)(void (*)(void))index_add_many, METH_FASTCALL,
     "index_add_many(marks, slots, keys, at) -> int: index_add of each key's mark (hash & 0xFFFFFFFF) and "
     "slot at[k]; how many took an empty entry. The caller makes room first."},
    {"index_rehash", (PyCFunction)(void (*)(void))index_rehash, METH_FASTCALL,
     "index_rehash(marks, slots, new_marks, new_slots) -> None: every live entry into an empty table."},
    {"place_blobs", (PyCFunction)(void (*)(void))place_blobs, METH_FASTCALL,
     "place_blobs(starts, sizes, at, blobs, base) -> None: slot at[k] starts where blobs[k] does, the "
     "blobs one after another from base, and has its size."},
    {"warm", (PyCFunction)(void (*)(void))warm, METH_FASTCALL,
     "warm(hot, users, start, marks, slots, arena, starts, sizes) -> (k, slot): CompactStore.working_set's "
     "loop from start, up to the first account found packed (its place and slot; slot -1: search in "
     "Python), or (len(users), -1)."},
    {"pack_state", (PyCFunction)(void (*)(void))pack_state, METH_FASTCALL,
     "pack_state(user, state) -> bytes | None: statecodec.pack's bytes, for a state of GeoIP-located visits "
     "without remembered alerts; None for any other (statecodec._pack writes it)."},
    {"pack_states", (PyCFunction)(void (*)(void))pack_states, METH_FASTCALL,
     "pack_states(users, states) -> list[bytes | None]: pack_state of each pair."},
    {"pack_signins", pack_signins, METH_VARARGS,
     "pack_signins(events, n[, owners[, keep]]) -> (parts, places): for each of n shares None, or (blob, "
     "special): its sign-ins (every account to the share hash(user) % n names, or "
     "owners[hash(user) % len(owners)]) as unpack_signins takes them; share keep's as a list of its "
     "sign-ins themselves; and for each share, where its sign-ins are in the batch (native int32s)."},
    {"unpack_signins", unpack_signins, METH_VARARGS,
     "unpack_signins(blob, special, signin_type) -> list: the sign-ins pack_signins packed."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "detector._speedups", "Pieces of the hot path in C (see detector/_speedups.c).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    init_kinds();
    no_args = PyTuple_New(0);
    question_mark = PyUnicode_InternFromString("?");
    empty_text = PyUnicode_InternFromString("");
    empty_tuple = PyTuple_New(0);
    outcome_first = PyUnicode_InternFromString("first");
    outcome_duplicate = PyUnicode_InternFromString("duplicate");
    outcome_same_ip = PyUnicode_InternFromString("same_ip");
    outcome_plausible = PyUnicode_InternFromString("plausible");
    outcome_failure_checked = PyUnicode_InternFromString("failure_checked");
    name_latitude = PyUnicode_InternFromString("latitude");
    name_longitude = PyUnicode_InternFromString("longitude");
    name_radius = PyUnicode_InternFromString("accuracy_radius_km");
    name_place = PyUnicode_InternFromString("place");
    name_source = PyUnicode_InternFromString("source");
    name_network = PyUnicode_InternFromString("network");
    name_asn = PyUnicode_InternFromString("asn");
    text_geoip = PyUnicode_InternFromString("geoip");
    text_hosting = PyUnicode_InternFromString("hosting");
    if (no_args == NULL || question_mark == NULL || empty_text == NULL || empty_tuple == NULL ||
        outcome_first == NULL || outcome_duplicate == NULL || outcome_same_ip == NULL ||
        outcome_plausible == NULL || outcome_failure_checked == NULL || name_latitude == NULL ||
        name_longitude == NULL || name_radius == NULL || name_place == NULL || name_source == NULL ||
        name_network == NULL || name_asn == NULL || text_geoip == NULL || text_hosting == NULL)
        return NULL;
    return PyModule_Create(&module);
}
