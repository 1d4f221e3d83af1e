/*
 * h5pool.hdf5._kernel: the per-row and per-byte work of a batch plan, in C,
 * without the GIL.
 *
 * Why compiled: a batch plan is arrays (h5pool.read.plan); running it in
 * Python costs a bytecode loop per row, which measured 5x a Python pread loop.
 * Each function here takes the plan's arrays and buffers, checks every offset
 * and length against the file sizes and the buffers it was given, and then
 * does the whole loop with the GIL released:
 *
 *   read_rows(fds, offsets, limits, row_bytes, out) -> (failed, code)
 *       row i: row_bytes bytes of descriptor fds[i] at offsets[i], into
 *       out[i * row_bytes:]; rows that follow on in the same file are one
 *       pread.  limits[i] is the file's indexed size: no read goes past it.
 *       code: 0 done, > 0 an errno, -1 a short read (file truncated),
 *       -2 an offset outside the file; failed: the first row affected.
 *   unshuffle(src, dst, itemsize)
 *       undo HDF5's byte shuffle of src into dst (same length).
 *   inflate(src, dst) -> int
 *       zlib-inflate src into exactly len(dst) bytes; returns the bytes made,
 *       or raises ValueError for data that is not a deflate stream of that size.
 *   decode_chunks(...) -> (failed, code)
 *       read, inflate and unshuffle a list of chunks, each into its own buffer
 *       (see below).
 *   gather_rows(sources, which, rows, row_bytes, out, slots)
 *       copy rows out of decoded chunks into their slots of a batch.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static void unshuffle_bytes(const unsigned char *in, unsigned char *to, Py_ssize_t length,
                            Py_ssize_t itemsize);

static int
int64_view(PyObject *object, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 8 || view->format == NULL ||
        !(strcmp(view->format, "q") == 0 || strcmp(view->format, "l") == 0 ||
          strcmp(view->format, "<q") == 0 || strcmp(view->format, "<l") == 0 ||
          strcmp(view->format, "=q") == 0 || strcmp(view->format, "=l") == 0)) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous int64 array", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *
read_rows(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *fds_object, *offsets_object, *limits_object;
    Py_ssize_t row_bytes;
    Py_buffer fds, offsets, limits, out;
    if (!PyArg_ParseTuple(args, "OOOnw*", &fds_object, &offsets_object, &limits_object,
                          &row_bytes, &out))
        return NULL;
    if (int64_view(fds_object, &fds, "fds") < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    if (int64_view(offsets_object, &offsets, "offsets") < 0) {
        PyBuffer_Release(&fds);
        PyBuffer_Release(&out);
        return NULL;
    }
    if (int64_view(limits_object, &limits, "limits") < 0) {
        PyBuffer_Release(&fds);
        PyBuffer_Release(&offsets);
        PyBuffer_Release(&out);
        return NULL;
    }
    Py_ssize_t count = fds.len / 8;
    PyObject *result = NULL;
    if (offsets.len / 8 != count || limits.len / 8 != count) {
        PyErr_SetString(PyExc_ValueError, "fds, offsets and limits differ in length");
        goto done;
    }
    if (row_bytes < 0 || (row_bytes > 0 && count > out.len / row_bytes)) {
        PyErr_Format(PyExc_ValueError, "out holds %zd bytes, %zd rows of %zd need more",
                     out.len, count, row_bytes);
        goto done;
    }
    const int64_t *fd = fds.buf, *offset = offsets.buf, *limit = limits.buf;
    char *destination = out.buf;
    Py_ssize_t failed = -1;
    long code = 0;
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t first = 0;
    while (first < count && row_bytes > 0) {
        Py_ssize_t last = first + 1;
        while (last < count && fd[last] == fd[first] &&
               offset[last] == offset[last - 1] + row_bytes && limit[last] == limit[first])
            last++;
        int64_t start = offset[first];
        int64_t wanted = (int64_t)(last - first) * row_bytes;
        if (start < 0 || fd[first] < 0 || start > limit[first] - wanted) {
            failed = first;
            code = -2;
            break;
        }
        char *into = destination + first * row_bytes;
        int64_t done = 0;
        while (done < wanted) {
            ssize_t got = pread((int)fd[first], into + done, (size_t)(wanted - done),
                                (off_t)(start + done));
            if (got < 0) {
                if (errno == EINTR)
                    continue;
                code = errno;
                break;
            }
            if (got == 0) {
                code = -1;
                break;
            }
            done += got;
        }
        if (code != 0) {
            failed = first + (Py_ssize_t)(done / row_bytes);
            break;
        }
        first = last;
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(nl)", failed, code);
done:
    PyBuffer_Release(&fds);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&limits);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *
unshuffle(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer source, target;
    Py_ssize_t itemsize;
    if (!PyArg_ParseTuple(args, "y*w*n", &source, &target, &itemsize))
        return NULL;
    if (target.len != source.len || itemsize < 1) {
        PyErr_Format(PyExc_ValueError, "unshuffle of %zd bytes into %zd, element size %zd",
                     source.len, target.len, itemsize);
        PyBuffer_Release(&source);
        PyBuffer_Release(&target);
        return NULL;
    }
    /* Under 256 KiB this takes less than handing the GIL over costs. */
    PyThreadState *state = source.len >= (256 << 10) ? PyEval_SaveThread() : NULL;
    unshuffle_bytes(source.buf, target.buf, source.len, itemsize);
    if (state != NULL)
        PyEval_RestoreThread(state);
    PyBuffer_Release(&source);
    PyBuffer_Release(&target);
    Py_RETURN_NONE;
}

static PyObject *
inflate_into(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer source, target;
    if (!PyArg_ParseTuple(args, "y*w*", &source, &target))
        return NULL;
    z_stream stream;
    memset(&stream, 0, sizeof(stream));
    int status = inflateInit2(&stream, 15);
    Py_ssize_t made = 0;
    if (status == Z_OK) {
        Py_BEGIN_ALLOW_THREADS
        stream.next_in = (Bytef *)source.buf;
        stream.avail_in = (uInt)source.len;
        stream.next_out = (Bytef *)target.buf;
        stream.avail_out = (uInt)target.len;
        status = inflate(&stream, Z_FINISH);
        made = (Py_ssize_t)stream.total_out;
        inflateEnd(&stream);
        Py_END_ALLOW_THREADS
    }
    int too_large = source.len > UINT32_MAX || target.len > UINT32_MAX;
    Py_ssize_t wanted = target.len;
    PyBuffer_Release(&source);
    PyBuffer_Release(&target);
    if (too_large) {
        PyErr_SetString(PyExc_ValueError, "chunk larger than 4 GiB");
        return NULL;
    }
    if (status != Z_STREAM_END || made != wanted) {
        PyErr_Format(PyExc_ValueError,
                     "deflate data does not inflate to %zd bytes (zlib status %d, %zd made)",
                     wanted, status, made);
        return NULL;
    }
    return PyLong_FromSsize_t(made);
}

/* Read, inflate and unshuffle chunks into their own buffers, the GIL released.
 *
 * decode_chunks(fds, offsets, sizes, masks, limits, outs, deflate_at, shuffle_at, itemsize)
 *   chunk i: sizes[i] stored bytes at offsets[i] of fds[i] (never past limits[i]);
 *   filter positions deflate_at / shuffle_at (-1: absent) are skipped where the
 *   chunk's mask has their bit; the result must fill outs[i] exactly.
 *   -> (failed, code): code 0 done, > 0 errno, -1 short read, -2 outside the
 *   file, -3 not a deflate stream, -4 decodes to another size, -5 no memory.
 */
static int
pread_fully(int fd, unsigned char *into, int64_t wanted, int64_t offset)
{
    int64_t done = 0;
    while (done < wanted) {
        ssize_t got = pread(fd, into + done, (size_t)(wanted - done), (off_t)(offset + done));
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (got == 0)
            return -1;
        done += got;
    }
    return 0;
}

static int
inflate_exactly(const unsigned char *in, int64_t length, unsigned char *to, int64_t wanted)
{
    z_stream stream;
    memset(&stream, 0, sizeof(stream));
    if (inflateInit2(&stream, 15) != Z_OK)
        return -5;
    stream.next_in = (Bytef *)in;
    stream.avail_in = (uInt)length;
    stream.next_out = to;
    stream.avail_out = (uInt)wanted;
    int status = inflate(&stream, Z_FINISH);
    int64_t made = (int64_t)stream.total_out;
    inflateEnd(&stream);
    if (status != Z_STREAM_END)
        return status == Z_BUF_ERROR && made == wanted ? -4 : -3;
    return made == wanted ? 0 : -4;
}

static void
unshuffle_bytes(const unsigned char *in, unsigned char *to, Py_ssize_t length, Py_ssize_t itemsize)
{
    Py_ssize_t elements = length / itemsize;
    Py_ssize_t whole = elements * itemsize;
    if (itemsize == 4) {
        const unsigned char *p0 = in, *p1 = in + elements, *p2 = in + 2 * elements,
                            *p3 = in + 3 * elements;
        for (Py_ssize_t element = 0; element < elements; element++) {
            unsigned char *word = to + element * 4;
            word[0] = p0[element];
            word[1] = p1[element];
            word[2] = p2[element];
            word[3] = p3[element];
        }
    } else {
        for (Py_ssize_t byte = 0; byte < itemsize; byte++) {
            const unsigned char *plane = in + byte * elements;
            unsigned char *column = to + byte;
            for (Py_ssize_t element = 0; element < elements; element++)
                column[element * itemsize] = plane[element];
        }
    }
    memcpy(to + whole, in + whole, (size_t)(length - whole));
}

static PyObject *
decode_chunks(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *arrays[5], *outs_object;
    int deflate_at, shuffle_at;
    Py_ssize_t itemsize;
    if (!PyArg_ParseTuple(args, "OOOOOOiin", &arrays[0], &arrays[1], &arrays[2], &arrays[3],
                          &arrays[4], &outs_object, &deflate_at, &shuffle_at, &itemsize))
        return NULL;
    static const char *names[5] = {"fds", "offsets", "sizes", "masks", "limits"};
    Py_buffer views[5];
    int held = 0;
    PyObject *result = NULL;
    Py_buffer *outs = NULL;
    Py_ssize_t outs_held = 0;
    for (; held < 5; held++)
        if (int64_view(arrays[held], &views[held], names[held]) < 0)
            goto done;
    Py_ssize_t count = views[0].len / 8;
    for (int i = 1; i < 5; i++)
        if (views[i].len / 8 != count) {
            PyErr_SetString(PyExc_ValueError, "the chunk arrays differ in length");
            goto done;
        }
    if (!PyList_Check(outs_object) || PyList_GET_SIZE(outs_object) != count) {
        PyErr_SetString(PyExc_ValueError, "outs must be a list with one buffer per chunk");
        goto done;
    }
    if (itemsize < 1) {
        PyErr_SetString(PyExc_ValueError, "itemsize must be at least 1");
        goto done;
    }
    outs = PyMem_Calloc((size_t)(count ? count : 1), sizeof(Py_buffer));
    if (outs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; outs_held < count; outs_held++)
        if (PyObject_GetBuffer(PyList_GET_ITEM(outs_object, outs_held), &outs[outs_held],
                               PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
            goto done;
    const int64_t *fd = views[0].buf, *offset = views[1].buf, *size = views[2].buf,
                  *mask = views[3].buf, *limit = views[4].buf;
    Py_ssize_t failed = -1;
    long code = 0;
    Py_BEGIN_ALLOW_THREADS
    int64_t largest_stored = 0, largest_chunk = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (size[i] > largest_stored)
            largest_stored = size[i];
        if (outs[i].len > largest_chunk)
            largest_chunk = outs[i].len;
    }
    unsigned char *stored = malloc((size_t)(largest_stored ? largest_stored : 1));
    unsigned char *inflated = malloc((size_t)(largest_chunk ? largest_chunk : 1));
    if (stored == NULL || inflated == NULL) {
        failed = 0;
        code = -5;
    }
    for (Py_ssize_t i = 0; i < count && code == 0; i++) {
        unsigned char *target = outs[i].buf;
        int64_t wanted = outs[i].len;
        if (offset[i] < 0 || size[i] < 0 || fd[i] < 0 || offset[i] > limit[i] - size[i]) {
            code = -2;
        } else if ((code = pread_fully((int)fd[i], stored, size[i], offset[i])) == 0) {
            int inflating = deflate_at >= 0 && !(mask[i] >> deflate_at & 1);
            int unshuffling = shuffle_at >= 0 && !(mask[i] >> shuffle_at & 1) && itemsize > 1;
            const unsigned char *data = stored;
            int64_t length = size[i];
            if (inflating) {
                unsigned char *into = unshuffling ? inflated : target;
                code = inflate_exactly(stored, size[i], into, wanted);
                data = into;
                length = wanted;
            }
            if (code == 0 && length != wanted)
                code = -4;
            if (code == 0 && unshuffling)
                unshuffle_bytes(data, target, (Py_ssize_t)wanted, itemsize);
            else if (code == 0 && !inflating)
                memcpy(target, data, (size_t)wanted);
        }
        if (code != 0)
            failed = i;
    }
    free(stored);
    free(inflated);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(nl)", failed, code);
done:
    for (Py_ssize_t i = 0; i < outs_held; i++)
        PyBuffer_Release(&outs[i]);
    PyMem_Free(outs);
    for (int i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    return result;
}

/* gather_rows(sources, which, rows, row_bytes, out, slots) -> None
 *   row i of the plan: row rows[i] of sources[which[i]] (a decoded chunk), into
 *   row slots[i] of out; every index is checked against its buffer first.
 */
static PyObject *
gather_rows(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *sources_object, *which_object, *rows_object, *slots_object;
    Py_ssize_t row_bytes;
    Py_buffer out, which, rows, slots;
    if (!PyArg_ParseTuple(args, "OOOnw*O", &sources_object, &which_object, &rows_object,
                          &row_bytes, &out, &slots_object))
        return NULL;
    PyObject *result = NULL;
    Py_buffer *sources = NULL;
    Py_ssize_t held = 0, views = 0;
    if (int64_view(which_object, &which, "which") < 0)
        goto done;
    views = 1;
    if (int64_view(rows_object, &rows, "rows") < 0)
        goto done;
    views = 2;
    if (int64_view(slots_object, &slots, "slots") < 0)
        goto done;
    views = 3;
    Py_ssize_t count = which.len / 8;
    if (rows.len / 8 != count || slots.len / 8 != count) {
        PyErr_SetString(PyExc_ValueError, "which, rows and slots differ in length");
        goto done;
    }
    if (!PyList_Check(sources_object) || row_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "sources must be a list, row_bytes at least 1");
        goto done;
    }
    Py_ssize_t sources_count = PyList_GET_SIZE(sources_object);
    sources = PyMem_Calloc((size_t)(sources_count ? sources_count : 1), sizeof(Py_buffer));
    if (sources == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < sources_count; held++)
        if (PyObject_GetBuffer(PyList_GET_ITEM(sources_object, held), &sources[held],
                               PyBUF_C_CONTIGUOUS) < 0)
            goto done;
    const int64_t *source_of = which.buf, *row_of = rows.buf, *slot_of = slots.buf;
    Py_ssize_t out_rows = out.len / row_bytes;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t source = source_of[i], row = row_of[i], slot = slot_of[i];
        if (source < 0 || source >= sources_count || row < 0 ||
            row >= sources[source].len / row_bytes || slot < 0 || slot >= out_rows) {
            PyErr_Format(PyExc_ValueError, "gather_rows: row %zd of the plan is out of bounds", i);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++)
        memcpy((char *)out.buf + slot_of[i] * row_bytes,
               (const char *)sources[source_of[i]].buf + row_of[i] * row_bytes,
               (size_t)row_bytes);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&sources[i]);
    PyMem_Free(sources);
    if (views > 0)
        PyBuffer_Release(&which);
    if (views > 1)
        PyBuffer_Release(&rows);
    if (views > 2)
        PyBuffer_Release(&slots);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"gather_rows", gather_rows, METH_VARARGS,
     "gather_rows(sources, which, rows, row_bytes, out, slots) -> None"},
    {"decode_chunks", decode_chunks, METH_VARARGS,
     "decode_chunks(fds, offsets, sizes, masks, limits, outs, deflate_at, shuffle_at, "
     "itemsize) -> (failed, code)"},
    {"read_rows", read_rows, METH_VARARGS,
     "read_rows(fds, offsets, limits, row_bytes, out) -> (failed, code)"},
    {"unshuffle", unshuffle, METH_VARARGS, "unshuffle(src, dst, itemsize)"},
    {"inflate", inflate_into, METH_VARARGS, "inflate(src, dst) -> bytes made"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "h5pool.hdf5._kernel",
    "The per-row and per-byte work of a batch plan, in C, without the GIL.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__kernel(void)
{
    return PyModule_Create(&module);
}
