/* civetweb's error log in ember-server's build (part of ember, MIT; not civetweb's code).
 *
 * Built with NO_FILESYSTEMS, civetweb has no error_log_file to write to and asks the program
 * for mg_cry_internal_impl instead (MG_EXTERNAL_FUNCTION_mg_cry_internal_impl): civetweb.c
 * includes this file where its own definition would be, so civetweb's internals (MG_BUF_LEN,
 * vsnprintf_impl, struct mg_connection) are in scope. The message goes where civetweb sends it
 * first too: the log_message callback, if the program set one; otherwise it is dropped, as
 * civetweb drops it when no error log file is configured. */

static void
mg_cry_internal_impl(const struct mg_connection *conn,
                     const char *func,
                     unsigned line,
                     const char *fmt,
                     va_list ap)
{
	char buf[MG_BUF_LEN];

	(void)func;
	(void)line;
	if ((conn == NULL) || (conn->phys_ctx == NULL)
	    || (conn->phys_ctx->callbacks.log_message == NULL)) {
		return;
	}

#if defined(GCC_DIAGNOSTIC)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#endif
	IGNORE_UNUSED_RESULT(vsnprintf_impl(buf, sizeof(buf), fmt, ap));
#if defined(GCC_DIAGNOSTIC)
#pragma GCC diagnostic pop
#endif
	buf[sizeof(buf) - 1] = 0;
	(void)conn->phys_ctx->callbacks.log_message(conn, buf);
}
