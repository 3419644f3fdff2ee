# shellcheck shell=bash
# The loopback mail stack for the test suite: sourced by scripts/test, not run on its own.
# Facts and pitfalls behind it: ../shared/MAILSTACK.md.
#
# rf_mail_setup starts a private Postfix (SMTP in) that delivers over LMTP to a private Dovecot
# (IMAP out), both on 127.0.0.1 only, both from config files in a temp dir (nothing read from or
# written to /etc/postfix or /etc/dovecot, so a developer's own mail server is left alone), and
# registers their stop with rf_add_cleanup. Nothing can leave the machine: every transport that
# could reach another host is `error:`, and the master.cf has no smtp client at all.
# Installs Debian's postfix, dovecot-imapd, dovecot-lmtpd (and openssl) when missing. Needs root
# (`postfix start` does). Several stacks may run side by side (other runs, a developer's stack):
# each has its own dir, Dovecot instance_name, Postfix syslog_name and free ports.
#
# Exported for the tests (example values):
#   RF_MAIL_SMTP_HOST=127.0.0.1
#   RF_MAIL_SMTP_PORT=2525     Postfix smtpd; STARTTLS offered (not required); AUTH PLAIN/LOGIN offered
#                              (optional: 127.0.0.0/8 may send without it), same users as IMAP
#   RF_MAIL_SMTPS_PORT=4465    Postfix smtpd with implicit TLS (for smtps:// URLs)
#   RF_MAIL_IMAP_PORT=1143     Dovecot IMAP; STARTTLS offered; LOGIN works without TLS too
#   RF_MAIL_IMAPS_PORT=1993    Dovecot IMAP with implicit TLS
#   RF_MAIL_LMTP_PORT=2424     Dovecot LMTP on TCP (to put mail in a box without Postfix)
#   RF_MAIL_CA_FILE=/tmp/rfm.XXXXXX/tls/ca.pem
#                              the CA that signed the servers' certificate (EC P-256, SAN
#                              DNS:localhost + IP:127.0.0.1, CA:FALSE leaf as rustls/webpki wants)
#   RF_MAIL_DOMAIN=replyflow.test
#   RF_MAIL_PASSWORD=secret    password of every user below (IMAP LOGIN, SMTP AUTH)
#   RF_MAIL_DIR=/tmp/rfm.XXXXXX
#   RF_MAIL_POSTFIX_DIR=/tmp/rfm.XXXXXX/postfix
#   RF_MAIL_USERS="approvals mary fred carol outsider"   local parts; the users are <part>@$RF_MAIL_DOMAIN
#
# Users (IMAP login = the full address): approvals@replyflow.test (the box whose plus-addresses
# carry tokens: mail to approvals+<token>@replyflow.test lands in approvals' INBOX, with the header
# `Delivered-To: approvals+<token>@replyflow.test`; Postfix's LMTP client adds no X-Original-To),
# mary@, fred@, carol@, outsider@replyflow.test.
# Maildirs: a user's INBOX is the Maildir $RF_MAIL_DIR/mail/<local part>/Maildir, e.g.
#   $RF_MAIL_DIR/mail/approvals/Maildir/new/   delivered, not yet seen by an IMAP session
#   $RF_MAIL_DIR/mail/approvals/Maildir/cur/   after an IMAP SELECT has seen it
#   other folders: $RF_MAIL_DIR/mail/<local part>/Maildir/.<Folder>/ (Maildir++ layout, separator ".")
# The maildirs belong to the `mail` user (uid 8); the tests run as root and may read them.
#
# What the tests must know:
#   - Dovecot tells IDLE clients about new mail a fixed ~500 ms after delivery (hard-coded); the
#     delivery itself takes a few ms. Allow for it in timings.
#   - Unknown user in replyflow.test: refused at RCPT ("550 5.1.1 <nobody@replyflow.test>:
#     Recipient address rejected: User unknown in virtual mailbox table"), nothing queued.
#     Any other domain: refused at RCPT ("550 5.7.1 <x@example.com>: Recipient address rejected:
#     replyflow test mail stack: mail never leaves this machine"), nothing queued, nothing sent.
#     So there are no bounce DSNs from this stack: a test that needs one crafts it and sends it.
#   - SMTPUTF8 is not offered (Dovecot's LMTP lacks it, and Postfix would bounce such mail):
#     `MAIL FROM:<..> SMTPUTF8` gets 555; raw UTF-8 (8-bit) headers without it are delivered as sent.
#   - Deferred mail is retried every 10-20 s (queue_run_delay, minimal/maximal_backoff_time).
#   - Stop/start Postfix (as root; its queue is on disk in $RF_MAIL_DIR/postfix-queue, so mail
#     queued before a stop is delivered after the start):
#       postfix -c "$RF_MAIL_POSTFIX_DIR" stop     (≈50 ms; the SMTP ports refuse connections at once)
#       postfix -c "$RF_MAIL_POSTFIX_DIR" start    (≈0.35 s; then wait until the SMTP port accepts;
#                                                   exit 1 when it is already running)
#       postfix -c "$RF_MAIL_POSTFIX_DIR" flush    (retry deferred mail now)
#       postqueue -c "$RF_MAIL_POSTFIX_DIR" -p     (list the queue)
#     Run them with stdin/stdout/stderr redirected (Stdio::null()); the cleanup stops whichever
#     Postfix master the pid file names at exit, so a test may leave it stopped or started.
#   - Logs: $RF_MAIL_DIR/postfix.log and $RF_MAIL_DIR/dovecot.log. The server certificate and
#     key: $RF_MAIL_DIR/tls/server.pem, server.key.
#   - Up to 1000 IMAP connections per user and IP (mail_max_userip_connections); failed logins
#     are answered at once (auth_failure_delay = 0).
#
# Time: ≈3 s when the packages are installed (most of it the first `postfix start`), ≈20 s on a
# machine without them (apt-get update + install). Setups running at the same moment take turns
# choosing ports (flock on /tmp/rf-mailstack.ports.lock), so a second one may wait ≈3 s.
# Stop at exit ≈1.2 s (Dovecot's master takes about a second to wind down).
#
# Knobs (environment): none needed. RF_MAIL_KEEP=1 keeps the dir (not the daemons) after exit.
#
# Needs from the sourcing script: rf_log, rf_warn, rf_error, rf_apt_install, rf_add_cleanup.

RF_MAIL_STACK_DIR=""
RF_MAIL_TAG=""
RF_MAIL_DOMAIN_NAME="replyflow.test"
RF_MAIL_USER_LIST="approvals mary fred carol outsider"
RF_MAIL_SECRET="secret"
RF_MAIL_START_DEADLINE=20 # seconds, per start attempt, until every port accepts
RF_MAIL_LOCK_FILE=/tmp/rf-mailstack.ports.lock
RF_MAIL_LOCK_FD=""

# True when something accepts TCP connections on 127.0.0.1:port.
rf_mail_port_open() {
    # shellcheck disable=SC2016 # $0 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# Prints the first line the server on 127.0.0.1:port greets with (empty when none within 2 s).
rf_mail_greeting() {
    local fd line=""
    if { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
        IFS= read -r -t 2 line <&"$fd" || true
        exec {fd}>&-
    fi
    printf '%s\n' "${line%$'\r'}"
}

# rf_mail_free_port FROM TAKEN... : the first port >= FROM that nothing listens on and that is not
# in TAKEN (ports already chosen for this stack). Fails after 200 ports.
rf_mail_free_port() {
    local port="$1" last=$(($1 + 200)) p taken
    shift
    for (( ; port < last; port++)); do
        taken=0
        for p in "$@"; do
            [[ "$p" == "$port" ]] && taken=1
        done
        [[ "$taken" -eq 1 ]] && continue
        rf_mail_port_open "$port" && continue
        printf '%s\n' "$port"
        return 0
    done
    return 1
}

rf_mail_ensure_packages() {
    local missing=()
    [[ -x /usr/sbin/postfix && -x /usr/lib/postfix/sbin/master && -x /usr/sbin/postconf ]] ||
        missing+=(postfix)
    [[ -x /usr/sbin/dovecot && -x /usr/lib/dovecot/imap && -x /usr/lib/dovecot/imap-login ]] ||
        missing+=(dovecot-imapd)
    [[ -x /usr/lib/dovecot/lmtp ]] || missing+=(dovecot-lmtpd)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    rf_log "mail stack: installing ${missing[*]} (Debian packages)"
    # Postfix installs unconfigured: no /etc/postfix/main.cf, nothing started.
    if ! printf 'postfix postfix/main_mailer_type select No configuration\n' | debconf-set-selections; then
        rf_error "debconf-set-selections failed: cannot preseed postfix/main_mailer_type"
        return 1
    fi
    local made_policy=0 status=0
    if [[ "$EUID" -eq 0 && ! -e /usr/sbin/policy-rc.d ]]; then
        # Keeps the packages' postinst from starting the system's postfix/dovecot behind our back.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    rf_apt_install "${missing[@]}" || status=$?
    if [[ "$made_policy" -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ "$status" -ne 0 ]]; then
        rf_error "mail stack: could not install ${missing[*]}"
        return 1
    fi
    if [[ ! -x /usr/sbin/postfix || ! -x /usr/sbin/dovecot || ! -x /usr/lib/dovecot/lmtp ]] ||
        ! command -v openssl >/dev/null 2>&1; then
        rf_error "mail stack: postfix/dovecot/lmtp/openssl still missing after apt-get install ${missing[*]}"
        return 1
    fi
}

# A CA and a leaf for localhost/127.0.0.1 signed by it (EC P-256). The leaf is not a CA: rustls
# (webpki) rejects a CA certificate used as the server's own certificate.
rf_mail_make_certs() {
    local tls="$1"
    mkdir -p "$tls" && chmod 755 "$tls" || return 1
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -subj "/CN=replyflow test mail CA $RF_MAIL_TAG" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign &&
            openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -subj /CN=localhost -keyout "$tls/server.key" -out "$tls/server.csr" &&
            printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
                'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' \
                'subjectAltName=DNS:localhost,IP:127.0.0.1' >"$tls/server.ext" &&
            openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
                -CAcreateserial -days 3650 -extfile "$tls/server.ext" -out "$tls/server.pem"
    } </dev/null >"$tls/openssl.log" 2>&1 || {
        cat "$tls/openssl.log" >&2
        return 1
    }
    chmod 600 "$tls/ca.key" "$tls/server.key"
    chmod 644 "$tls/ca.pem" "$tls/server.pem"
}

rf_mail_write_dovecot_conf() {
    local dir="$1" imap="$2" imaps="$3" lmtp="$4" uid="$5" gid="$6" u
    : >"$dir/users"
    for u in $RF_MAIL_USER_LIST; do
        printf '%s@%s:{PLAIN}%s::::::\n' "$u" "$RF_MAIL_DOMAIN_NAME" "$RF_MAIL_SECRET" >>"$dir/users"
    done
    # read by Dovecot's auth process, which runs as the dovecot user
    chown root:dovecot "$dir/users" && chmod 640 "$dir/users"
    # Every block on several lines: Dovecot's parser rejects `name { key = value }` on one line.
    cat >"$dir/dovecot.conf" <<EOF
# replyflow test mail stack ($RF_MAIL_TAG): written by scripts/lib/mailstack.sh
instance_name = rf-mail-$RF_MAIL_TAG
base_dir = $dir/dovecot
state_dir = $dir/dovecot-state
log_path = $dir/dovecot.log
info_log_path = $dir/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
hostname = mail.$RF_MAIL_DOMAIN_NAME
login_greeting = replyflow test mail rf-mail-$RF_MAIL_TAG ready.
shutdown_clients = yes

ssl = yes
ssl_cert = <$dir/tls/server.pem
ssl_key = <$dir/tls/server.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Lu
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu $dir/users
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$dir/mail/%n
}
first_valid_uid = $uid
first_valid_gid = $gid
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 1000
namespace inbox {
  inbox = yes
}

recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
lmtp_hdr_delivery_address = final
protocol lmtp {
  postmaster_address = postmaster@$RF_MAIL_DOMAIN_NAME
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps
    ssl = yes
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp
  }
}
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
EOF
}

rf_mail_write_postfix_conf() {
    local dir="$1" smtp="$2" smtps="$3" cfg="$1/postfix" meta u f
    mkdir -p "$cfg" || return 1
    meta="$(postconf -d -h meta_directory 2>/dev/null)" || meta=/etc/postfix
    [[ -d "$meta" ]] || meta=/etc/postfix
    for f in "$meta"/postfix-files "$meta"/postfix-files.d "$meta"/dynamicmaps.cf "$meta"/dynamicmaps.cf.d; do
        [[ -e "$f" ]] && cp -a "$f" "$cfg/"
    done
    if [[ ! -f "$cfg/postfix-files" ]]; then
        rf_error "mail stack: $meta/postfix-files not found (is the postfix package complete?)"
        return 1
    fi
    : >"$cfg/virtual_mailboxes"
    for u in $RF_MAIL_USER_LIST; do
        printf '%s@%s OK\n' "$u" "$RF_MAIL_DOMAIN_NAME" >>"$cfg/virtual_mailboxes"
    done
    local never="error:5.7.1 replyflow test mail stack: mail never leaves this machine"
    cat >"$cfg/main.cf" <<EOF
# replyflow test mail stack ($RF_MAIL_TAG): written by scripts/lib/mailstack.sh
compatibility_level = 3.6
queue_directory = $dir/postfix-queue
data_directory = $dir/postfix-data
meta_directory = $cfg
mail_owner = postfix
setgid_group = postdrop
syslog_name = rf-mail-$RF_MAIL_TAG/postfix
maillog_file = $dir/postfix.log
maillog_file_prefixes = $dir
readme_directory = no
biff = no
append_dot_mydomain = no

myhostname = mail.$RF_MAIL_DOMAIN_NAME
mydomain = $RF_MAIL_DOMAIN_NAME
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_banner = \$myhostname ESMTP replyflow test SMTP rf-mail-$RF_MAIL_TAG
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
# Dovecot's LMTP does not offer SMTPUTF8: with it on, a client that asks for SMTPUTF8 and sends
# UTF-8 headers gets its mail bounced at delivery. Off: 8-bit headers pass through as they are.
smtputf8_enable = no
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 1000

virtual_mailbox_domains = $RF_MAIL_DOMAIN_NAME
virtual_mailbox_maps = texthash:$cfg/virtual_mailboxes
virtual_transport = lmtp:unix:$dir/dovecot/lmtp
recipient_delimiter = +

# nothing may leave the machine
default_transport = $never
relay_transport = $never
local_transport = $never

# short retries for tests
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 20s

smtpd_tls_security_level = may
smtpd_tls_cert_file = $dir/tls/server.pem
smtpd_tls_key_file = $dir/tls/server.key
smtpd_tls_auth_only = no
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $dir/dovecot/auth-postfix
broken_sasl_auth_clients = no
EOF
    # chroot n everywhere; no smtp/relay client: there is no way out.
    cat >"$cfg/master.cf" <<EOF
# replyflow test mail stack ($RF_MAIL_TAG): written by scripts/lib/mailstack.sh
# service   type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$smtp inet n   -       n       -       -       smtpd
127.0.0.1:$smtps inet n  -       n       -       -       smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
pickup      unix  n       -       n       60      1       pickup
cleanup     unix  n       -       n       -       0       cleanup
qmgr        unix  n       -       n       300     1       qmgr
tlsmgr      unix  -       -       n       1000?   1       tlsmgr
rewrite     unix  -       -       n       -       -       trivial-rewrite
bounce      unix  -       -       n       -       0       bounce
defer       unix  -       -       n       -       0       bounce
trace       unix  -       -       n       -       0       bounce
verify      unix  -       -       n       -       1       verify
flush       unix  n       -       n       1000?   0       flush
proxymap    unix  -       -       n       -       -       proxymap
proxywrite  unix  -       -       n       -       1       proxymap
showq       unix  n       -       n       -       -       showq
error       unix  -       -       n       -       -       error
retry       unix  -       -       n       -       -       error
discard     unix  -       -       n       -       -       discard
lmtp        unix  -       -       n       -       -       lmtp
anvil       unix  -       -       n       -       1       anvil
scache      unix  -       -       n       -       1       scache
postlog     unix-dgram n  -       n       -       1       postlogd
EOF
}

# Prints the pid in FILE when that process is alive and its command line or environment names
# NEEDLE (our config): a stale pid file never makes us signal somebody else's process.
rf_mail_our_pid() {
    local file="$1" needle="$2" pid
    [[ -f "$file" ]] || return 1
    pid="$(head -n 1 "$file" 2>/dev/null | tr -d ' \t\r\n')"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -d "/proc/$pid" ]] || return 1
    if grep -qzF -- "$needle" "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null; then
        printf '%s\n' "$pid"
        return 0
    fi
    return 1
}

# True while PID runs (a zombie waiting for a reaper that is slow to reap counts as gone).
rf_mail_pid_alive() {
    local state
    [[ -r "/proc/$1/stat" ]] || return 1
    state="$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)"
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Stops this stack's Postfix and Dovecot (by their pid files, checked to be ours) and waits for them.
rf_mail_stop_daemons() {
    local dir="$1" pids=() pid i
    if pid="$(rf_mail_our_pid "$dir/postfix-queue/pid/master.pid" "MAIL_CONFIG=$dir/postfix")"; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
    if pid="$(rf_mail_our_pid "$dir/dovecot/master.pid" "$dir/dovecot.conf")"; then
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
    ((${#pids[@]} == 0)) && return 0
    local alive
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            rf_mail_pid_alive "$pid" && alive=1
        done
        [[ "$alive" -eq 0 ]] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if rf_mail_pid_alive "$pid"; then
            rf_warn "mail stack: pid $pid did not stop within 10 s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    # Postfix children (they carry MAIL_CONFIG=our dir) that outlived their master.
    local env_file
    while IFS= read -r env_file; do
        pid="${env_file#/proc/}"
        pid="${pid%/environ}"
        [[ "$pid" =~ ^[0-9]+$ && "$pid" -ne $$ ]] && kill -KILL "$pid" 2>/dev/null
    done < <(grep -lzxF -- "MAIL_CONFIG=$dir/postfix" /proc/[0-9]*/environ 2>/dev/null)
    return 0
}

rf_mail_stop() {
    local dir="$RF_MAIL_STACK_DIR"
    [[ -n "$dir" && -d "$dir" ]] || return 0
    RF_MAIL_STACK_DIR=""
    rf_mail_stop_daemons "$dir"
    if [[ "${RF_MAIL_KEEP:-0}" == "1" ]]; then
        rf_log "mail stack stopped; RF_MAIL_KEEP=1: $dir kept"
    else
        rm -rf "$dir"
        rf_log "mail stack stopped and $dir removed"
    fi
}

rf_mail_show_logs() {
    local dir="$1" f
    for f in "$dir/dovecot.start.log" "$dir/dovecot.log" "$dir/postfix.start.log" "$dir/postfix.log"; do
        if [[ -s "$f" ]]; then
            printf '%s\n' "---- last 40 lines of $f" >&2
            tail -n 40 "$f" >&2
        fi
    done
    if [[ -f "$dir/postfix.start.log" ]]; then
        # Postfix prints its fatal errors on a terminal only.
        printf '%s\n' "---- postfix -c $dir/postfix check" >&2
        script -qc "postfix -c '$dir/postfix' check" /dev/null </dev/null 2>&1 | tail -n 20 >&2 || true
    fi
}

# rf_mail_wait_ports DEADLINE NAME:PORT[:GREETING]... : waits until each port accepts (and, when
# GREETING is given, greets with a line containing it: the port is ours, not someone else's).
rf_mail_wait_ports() {
    local deadline="$1" spec name port want line
    shift
    for spec in "$@"; do
        IFS=: read -r name port want <<<"$spec"
        while :; do
            if rf_mail_port_open "$port"; then
                [[ -z "$want" ]] && break
                line="$(rf_mail_greeting "$port")"
                [[ "$line" == *"$want"* ]] && break
            fi
            if ((SECONDS >= deadline)); then
                if [[ -n "$want" ]]; then
                    rf_error "mail stack: $name on 127.0.0.1:$port not ready after ${RF_MAIL_START_DEADLINE}s (wanted a greeting with \"$want\", got \"${line:-}\")"
                else
                    rf_error "mail stack: $name on 127.0.0.1:$port not accepting after ${RF_MAIL_START_DEADLINE}s"
                fi
                return 1
            fi
            sleep 0.1
        done
    done
}

# One attempt: configs for these ports, start both daemons, wait for the ports.
# Returns 0 when up, 2 when a port was taken meanwhile (try other ports), 1 otherwise.
rf_mail_start_once() {
    local dir="$1" smtp="$2" smtps="$3" imap="$4" imaps="$5" lmtp="$6" uid="$7" gid="$8"
    local deadline=$((SECONDS + RF_MAIL_START_DEADLINE))
    rf_mail_write_dovecot_conf "$dir" "$imap" "$imaps" "$lmtp" "$uid" "$gid" || return 1
    rf_mail_write_postfix_conf "$dir" "$smtp" "$smtps" || return 1
    : >"$dir/dovecot.log"
    : >"$dir/postfix.log"
    # stdin/stdout/stderr to files: Dovecot's master keeps the caller's stderr open.
    # {RF_MAIL_LOCK_FD}>&-: the daemons must not inherit (and so keep holding) the ports lock.
    if ! dovecot -c "$dir/dovecot.conf" </dev/null >"$dir/dovecot.start.log" 2>&1 {RF_MAIL_LOCK_FD}>&-; then
        grep -qi 'address already in use' "$dir/dovecot.start.log" "$dir/dovecot.log" && return 2
        rf_error "mail stack: dovecot -c $dir/dovecot.conf failed"
        return 1
    fi
    # Postfix needs Dovecot only when it delivers: no need to wait for Dovecot first.
    if ! postfix -c "$dir/postfix" start </dev/null >"$dir/postfix.start.log" 2>&1 {RF_MAIL_LOCK_FD}>&-; then
        grep -qi 'address already in use' "$dir/postfix.start.log" "$dir/postfix.log" && return 2
        rf_error "mail stack: postfix -c $dir/postfix start failed"
        return 1
    fi
    rf_mail_wait_ports "$deadline" "Dovecot IMAP:$imap:rf-mail-$RF_MAIL_TAG" "Dovecot IMAPS:$imaps" \
        "Dovecot LMTP:$lmtp:rf-mail-$RF_MAIL_TAG" \
        "Postfix SMTP:$smtp:rf-mail-$RF_MAIL_TAG" "Postfix SMTPS:$smtps" || {
        grep -qi 'address already in use' "$dir/dovecot.log" "$dir/postfix.log" && return 2
        return 1
    }
}

rf_mail_setup() {
    local started=$SECONDS
    if [[ "$EUID" -ne 0 ]]; then
        rf_error "the mail stack needs root (postfix start runs as root); run the tests as root"
        return 1
    fi
    if [[ -n "$RF_MAIL_STACK_DIR" ]]; then
        rf_error "rf_mail_setup called twice: a mail stack already runs in $RF_MAIL_STACK_DIR"
        return 1
    fi
    rf_mail_ensure_packages || return 1
    local cmd
    for cmd in postfix postconf dovecot openssl flock script runuser; do
        if ! command -v "$cmd" >/dev/null 2>&1; then
            rf_error "mail stack: command $cmd not found"
            return 1
        fi
    done
    local uid gid
    # Owner of the maildirs (Dovecot refuses to deliver as root).
    if ! uid="$(id -u mail 2>/dev/null)" || ! gid="$(id -g mail 2>/dev/null)"; then
        if ! uid="$(id -u nobody 2>/dev/null)" || ! gid="$(id -g nobody 2>/dev/null)"; then
            rf_error "mail stack: neither user mail nor nobody exists (mail owner)"
            return 1
        fi
    fi
    local u
    for u in postfix dovecot dovenull; do
        if ! id -u "$u" >/dev/null 2>&1; then
            rf_error "mail stack: system user $u missing (reinstall postfix/dovecot-core)"
            return 1
        fi
    done

    # A short dir (unix socket paths ≤ 107 bytes) that postfix and the mail user can traverse.
    local base="${TMPDIR:-/tmp}" dir
    if [[ "${#base}" -gt 40 || "$base" == *[[:space:]]* || ! -d "$base" ]] ||
        ! runuser -u postfix -- test -x "$base" 2>/dev/null; then
        base=/tmp
    fi
    dir="$(mktemp -d "$base/rfm.XXXXXX")" || {
        rf_error "mail stack: mktemp -d in $base failed"
        return 1
    }
    RF_MAIL_STACK_DIR="$dir"
    rf_add_cleanup rf_mail_stop
    RF_MAIL_TAG="${dir##*/rfm.}"
    chmod 755 "$dir"
    mkdir -p "$dir/postfix-data" "$dir/postfix-queue" "$dir/dovecot-state" "$dir/mail" || {
        rf_error "mail stack: cannot create directories in $dir"
        return 1
    }
    chown postfix: "$dir/postfix-data"
    for u in $RF_MAIL_USER_LIST; do
        mkdir -p "$dir/mail/$u/Maildir/cur" "$dir/mail/$u/Maildir/new" "$dir/mail/$u/Maildir/tmp"
    done
    chown -R "$uid:$gid" "$dir/mail"
    if ! rf_mail_make_certs "$dir/tls"; then
        rf_error "mail stack: could not make the TLS certificates with openssl"
        return 1
    fi

    # Ports: the first free ones from the usual numbers up. The lock keeps two setups running at
    # the same moment from choosing the same ports; a port someone else takes meanwhile makes us
    # try the next ones.
    local status=1 attempt smtp=2525 smtps=4465 imap=1143 imaps=1993 lmtp=2424
    exec {RF_MAIL_LOCK_FD}>>"$RF_MAIL_LOCK_FILE" || {
        rf_error "mail stack: cannot open $RF_MAIL_LOCK_FILE"
        return 1
    }
    if ! flock -w 120 "$RF_MAIL_LOCK_FD"; then
        exec {RF_MAIL_LOCK_FD}>&-
        rf_error "mail stack: another setup holds $RF_MAIL_LOCK_FILE for more than 120 s"
        return 1
    fi
    for attempt in 1 2 3 4 5; do
        if ! { smtp="$(rf_mail_free_port "$smtp")" &&
            smtps="$(rf_mail_free_port "$smtps" "$smtp")" &&
            imap="$(rf_mail_free_port "$imap" "$smtp" "$smtps")" &&
            imaps="$(rf_mail_free_port "$imaps" "$smtp" "$smtps" "$imap")" &&
            lmtp="$(rf_mail_free_port "$lmtp" "$smtp" "$smtps" "$imap" "$imaps")"; }; then
            status=1
            rf_error "mail stack: no free loopback ports found (200 tried from each usual port)"
            break
        fi
        rf_log "mail stack: starting Dovecot + Postfix in $dir (SMTP $smtp, SMTPS $smtps, IMAP $imap, IMAPS $imaps, LMTP $lmtp)"
        status=0
        rf_mail_start_once "$dir" "$smtp" "$smtps" "$imap" "$imaps" "$lmtp" "$uid" "$gid" || status=$?
        [[ "$status" -eq 2 ]] || break
        rf_mail_stop_daemons "$dir"
        if [[ "$attempt" -eq 5 ]]; then
            status=1
            rf_error "mail stack: ports taken by someone else on 5 attempts"
            break
        fi
        rf_warn "mail stack: a port was taken meanwhile (attempt $attempt): trying the next ports"
        rm -f "$dir/postfix.start.log"
        rm -rf "$dir/postfix-queue" "$dir/dovecot"
        mkdir -p "$dir/postfix-queue"
        smtp=$((smtp + 1)) smtps=$((smtps + 1)) imap=$((imap + 1)) imaps=$((imaps + 1)) lmtp=$((lmtp + 1))
        status=1
    done
    exec {RF_MAIL_LOCK_FD}>&-
    if [[ "$status" -ne 0 ]]; then
        rf_mail_show_logs "$dir"
        rf_mail_stop_daemons "$dir"
        rf_error "mail stack: Postfix/Dovecot did not come up (logs above, dir $dir)"
        return 1
    fi

    export RF_MAIL_SMTP_HOST=127.0.0.1
    export RF_MAIL_SMTP_PORT="$smtp"
    export RF_MAIL_SMTPS_PORT="$smtps"
    export RF_MAIL_IMAP_PORT="$imap"
    export RF_MAIL_IMAPS_PORT="$imaps"
    export RF_MAIL_LMTP_PORT="$lmtp"
    export RF_MAIL_CA_FILE="$dir/tls/ca.pem"
    export RF_MAIL_DOMAIN="$RF_MAIL_DOMAIN_NAME"
    export RF_MAIL_PASSWORD="$RF_MAIL_SECRET"
    export RF_MAIL_DIR="$dir"
    export RF_MAIL_POSTFIX_DIR="$dir/postfix"
    export RF_MAIL_USERS="$RF_MAIL_USER_LIST"
    rf_log "mail stack up in $((SECONDS - started))s: SMTP 127.0.0.1:$smtp (SMTPS $smtps), IMAP $imap, IMAPS $imaps, LMTP $lmtp, dir $dir"
}
