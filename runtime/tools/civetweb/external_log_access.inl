/* civetweb's access log in ember-server's build (part of ember, MIT; not civetweb's code).
 *
 * Built with NO_FILESYSTEMS, civetweb has no access_log_file and asks the program for
 * log_access instead (MG_EXTERNAL_FUNCTION_log_access); civetweb.c includes this file where its
 * own definition would be. As civetweb's: one line per request, in the common log format
 * without the date ("ADDR - USER \"METHOD URI HTTP/V\" STATUS BYTES"), given to the log_access
 * callback when the program set one; nothing at all otherwise. */

static void
log_access(const struct mg_connection *conn)
{
	const struct mg_request_info *ri;
	char src_addr[IP_ADDR_STR_LEN];
	char log_buf[4096];

	if ((conn == NULL) || (conn->phys_ctx == NULL)
	    || (conn->phys_ctx->callbacks.log_access == NULL)) {
		return;
	}
	ri = &conn->request_info;
	sockaddr_to_string(src_addr, sizeof(src_addr), &conn->client.rsa);
	mg_snprintf(conn,
	            NULL, /* a truncated line is still logged */
	            log_buf,
	            sizeof(log_buf),
	            "%s - %s \"%s %s%s%s HTTP/%s\" %d %" INT64_FMT,
	            src_addr,
	            (ri->remote_user == NULL) ? "-" : ri->remote_user,
	            ri->request_method ? ri->request_method : "-",
	            ri->request_uri ? ri->request_uri : "-",
	            ri->query_string ? "?" : "",
	            ri->query_string ? ri->query_string : "",
	            ri->http_version ? ri->http_version : "-",
	            conn->status_code,
	            conn->num_bytes_sent);
	(void)conn->phys_ctx->callbacks.log_access(conn, log_buf);
}
