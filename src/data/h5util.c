/* h5util.c — see h5util.h. */
#include "data/h5util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fm_h5_quiet_begin(fm_h5_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    q->saved = H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data) >= 0;
    if (q->saved) H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void fm_h5_quiet_end(const fm_h5_quiet *q)
{
    if (q->saved) H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

fm_status fm_h5_attr_write(hid_t obj, const char *name, hid_t mtype, hid_t ftype, const void *val,
                           const char *where)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t at = sp < 0 ? -1 : H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = at < 0 ? -1 : H5Awrite(at, mtype, val);
    if (at >= 0) H5Aclose(at);
    if (sp >= 0) H5Sclose(sp);
    if (e < 0) return FM_ERR(FM_ERR_IO, "cannot write attribute '%s' of %s", name, where);
    return NULL;
}

fm_status fm_h5_attr_write_str(hid_t obj, const char *name, const char *val, const char *where)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(val) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    H5Tset_cset(t, H5T_CSET_UTF8);
    fm_status st = fm_h5_attr_write(obj, name, t, t, val, where);
    H5Tclose(t);
    return st;
}

fm_status fm_h5_attr_read_u64(hid_t obj, const char *name, uint64_t *v, const char *where)
{
    if (H5Aexists(obj, name) <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s has no attribute '%s'", where, name);
    hid_t at = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t sp = at < 0 ? -1 : H5Aget_space(at);
    hid_t ft = at < 0 ? -1 : H5Aget_type(at);
    herr_t e = -1;
    if (sp >= 0 && ft >= 0 && H5Sget_simple_extent_npoints(sp) == 1 && H5Tget_class(ft) == H5T_INTEGER)
        e = H5Aread(at, H5T_NATIVE_UINT64, v);
    if (ft >= 0) H5Tclose(ft);
    if (sp >= 0) H5Sclose(sp);
    if (at >= 0) H5Aclose(at);
    if (e < 0) return FM_ERR(FM_ERR_INPUT, "attribute '%s' of %s is not a single integer", name, where);
    return NULL;
}

fm_status fm_h5_attr_read_str(hid_t obj, const char *name, char *buf, size_t size, const char *where)
{
    if (H5Aexists(obj, name) <= 0)
        return FM_ERR(FM_ERR_INPUT, "%s has no attribute '%s'", where, name);
    hid_t at = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = at < 0 ? -1 : H5Aget_type(at);
    hid_t sp = at < 0 ? -1 : H5Aget_space(at);
    fm_status st = NULL;
    if (ft < 0 || sp < 0 || H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        st = FM_ERR(FM_ERR_INPUT, "attribute '%s' of %s is not a string", name, where);
    } else if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        char *s = NULL;
        if (H5Aread(at, mt, &s) < 0 || !s)
            st = FM_ERR(FM_ERR_INPUT, "cannot read string attribute '%s' of %s", name, where);
        else {
            snprintf(buf, size, "%s", s);
            H5free_memory(s);
        }
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(ft);
        char *tmp = n <= 65536 ? calloc(n + 1, 1) : NULL;
        if (!tmp) st = FM_ERR(FM_ERR_INPUT, "string attribute '%s' of %s is longer than 64 KiB", name, where);
        else {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, n + 1);
            H5Tset_cset(mt, H5Tget_cset(ft));
            if (H5Aread(at, mt, tmp) < 0)
                st = FM_ERR(FM_ERR_INPUT, "cannot read string attribute '%s' of %s", name, where);
            else snprintf(buf, size, "%s", tmp);
            H5Tclose(mt);
            free(tmp);
        }
    }
    if (sp >= 0) H5Sclose(sp);
    if (ft >= 0) H5Tclose(ft);
    if (at >= 0) H5Aclose(at);
    return st;
}
