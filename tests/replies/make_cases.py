#!/usr/bin/env python3
"""Writes the project's own reply corpus (tests/replies/*.eml + cases.json).

Every message is written here, by us, the way the named client lays out a reply to our approval
mail: its attribution / header block, the quoted original with the token line, its charset and
transfer encoding. Re-run after editing: python3 tests/replies/make_cases.py
"""
import base64, hashlib, json, os, quopri

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "ah" + base64.b32encode(bytes([0x4d, 0x61, 0x72, 0x79, 0x20, 0x4d, 0x61, 0x21])).decode().lower().rstrip("=") \
    + base64.b32encode(bytes(range(10, 20))).decode().lower()
assert len(TOKEN) == 31, TOKEN
TAG = "RF-k3x9q2ab"
BOX = f"approvals+{TOKEN}@example.com"
MSGID = "<rf.k3x9q2abmn4p5.2@example.com>"
TOKEN_LINE = f"回复凭证 / Reply token: {TOKEN}"

ORIG_ZH = f"""马丽，您好：

有一项审批等待您处理。

任务：部门经理审批
流程：差旅报销
业务编号：EXP-2026-0042
发起人：王小明 (wangxm)
金额：¥3,280.00
答复期限：2026-11-24 18:00

如何答复：直接回复本邮件，第一行写您的决定：
  同意：回复 1 或 同意 或 批准
  驳回：回复 2 或 驳回 或 不同意

第一行之后的内容（可不写）作为审批意见。
转交他人处理：第一行写「转交 <邮箱地址>」。
请在回复中保留下面的回复凭证（引用原文回复即可）；逾期回复无效。

{TOKEN_LINE}"""

ORIG_EN = f"""Hello Mary Ma,

An approval is waiting for your decision.

Task: Manager approval
Process: Travel expenses
Business key: EXP-2026-0042
Started by: Fred Fu (fred)
Amount: $3,280.00
Reply by: 2026-11-24 18:00

How to answer: reply to this email with your decision on the first line --
  Approve: reply 1 or approve or yes
  Reject: reply 2 or reject or no

Anything after the first line (optional) becomes your comment.
To hand the task on, write on the first line: delegate <email address>
Keep the reply token below in your reply (quoting this email is enough); late replies are not accepted.

{TOKEN_LINE}"""

SUBJ_ZH = f"待审批「部门经理审批」差旅报销 EXP-2026-0042 [{TAG}]"
SUBJ_EN = f"Approval needed: Manager approval – Travel expenses EXP-2026-0042 [{TAG}]"


def q(text, prefix="> "):
    return "\n".join((prefix + l) if l else prefix.rstrip() for l in text.split("\n"))


def enc_header(s, charset="utf-8"):
    if all(ord(c) < 128 for c in s):
        return s
    return "=?%s?B?%s?=" % (charset, base64.b64encode(s.encode(charset)).decode())


def headers(subject, frm="Mary Ma <mary@example.com>", to=BOX, extra="", charset="utf-8", mid=None):
    mid = mid or "<%s@mail.example.net>" % hashlib.md5((subject + extra + frm + str(len(CASES))).encode()).hexdigest()[:16]
    return (
        f"Return-Path: <mary@example.com>\n"
        f"Delivered-To: {to}\n"
        f"From: {enc_header(frm.split(' <')[0], charset) + ' <' + frm.split(' <')[1] if ' <' in frm else frm}\n"
        f"To: {to}\n"
        f"Subject: {enc_header(subject, charset)}\n"
        f"Date: Sat, 21 Nov 2026 10:05:00 +0800\n"
        f"Message-ID: {mid}\n"
        f"In-Reply-To: {MSGID}\n"
        f"References: {MSGID}\n"
        f"MIME-Version: 1.0\n"
        f"Authentication-Results: mx.example.com; dkim=pass header.d=example.com; dmarc=pass\n"
        + extra
    )


def part(text, subtype="plain", charset="utf-8", cte="base64"):
    data = text.replace("\n", "\r\n").encode(charset)
    if cte == "base64":
        body = base64.encodebytes(data).decode()
    elif cte == "quoted-printable":
        body = quopri.encodestring(data).decode()
    elif cte == "7bit":
        try:
            body = data.decode("ascii")
        except UnicodeDecodeError:
            cte = "quoted-printable"
            body = quopri.encodestring(data).decode()
    else:
        body = data.decode(charset, errors="strict") if charset == "utf-8" else None
        assert body is not None
    return (f"Content-Type: text/{subtype}; charset=\"{charset}\"\n"
            f"Content-Transfer-Encoding: {cte}\n\n{body}")


def single(hdrs, text, subtype="plain", charset="utf-8", cte="base64"):
    return (hdrs + part(text, subtype, charset, cte)).encode("ascii")


def alternative(hdrs, text, html, charset="utf-8", cte="base64"):
    b = "----=_Part_RF_0001"
    return (hdrs + f"Content-Type: multipart/alternative; boundary=\"{b}\"\n\n"
            f"--{b}\n{part(text, 'plain', charset, cte)}\n--{b}\n{part(html, 'html', charset, cte)}\n--{b}--\n").encode("ascii")


def html_lines(text):
    return "<br>\n".join(l.replace("&", "&amp;").replace("<", "&lt;") for l in text.split("\n"))


CASES = []


def case(name, raw, kind, outcome=None, comment="", outcomes=None, **extra):
    path = os.path.join(HERE, name + ".eml")
    with open(path, "wb") as f:
        f.write(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    c = {"file": name + ".eml", "kind": kind, "outcome": outcome, "comment": comment}
    if outcomes:
        c["outcomes"] = outcomes
    c.update(extra)
    CASES.append(c)


# ---- Gmail
case("gmail_en_approve", alternative(headers("Re: " + SUBJ_EN),
     "Approved\n\nOn Sat, Nov 21, 2026 at 10:00 AM replyflow <approvals@example.com> wrote:\n\n" + q(ORIG_EN) + "\n",
     '<div dir="ltr">Approved</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Sat, Nov 21, 2026 at 10:00 AM replyflow &lt;<a href="mailto:approvals@example.com">approvals@example.com</a>&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex">' + html_lines(ORIG_EN) + '</blockquote></div>\n'),
     "decision", "approve", "", token_source="plus_address")
case("gmail_en_split_attribution", single(headers("Re: " + SUBJ_EN),
     "Reject - the hotel is over the policy limit\n\nOn Sat, Nov 21, 2026 at 10:00 AM replyflow via Approvals <\napprovals@example.com> wrote:\n\n" + q(ORIG_EN) + "\n"),
     "decision", "reject", "the hotel is over the policy limit")
case("gmail_zh", alternative(headers("Re: " + SUBJ_ZH),
     "同意，预算合理\n\n审批助手 <approvals@example.com> 于2026年11月21日周六 10:00写道：\n\n" + q(ORIG_ZH) + "\n",
     '<div dir="ltr">同意，预算合理</div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">审批助手 &lt;approvals@example.com&gt; 于2026年11月21日周六 10:00写道：<br></div><blockquote class="gmail_quote">' + html_lines(ORIG_ZH) + '</blockquote></div>'),
     "decision", "approve", "预算合理")
case("gmail_html_only_zh", single(headers("Re: " + SUBJ_ZH),
     '<div dir="ltr"><div>同意</div><div>酒店请选协议价</div></div><br><div class="gmail_quote"><div dir="ltr" class="gmail_attr">审批助手 &lt;approvals@example.com&gt; 于2026年11月21日周六 10:00写道：<br></div><blockquote class="gmail_quote">' + html_lines(ORIG_ZH) + '</blockquote></div>', "html"),
     "decision", "approve", "酒店请选协议价", token_source="plus_address")
case("gmail_greeting_en", single(headers("Re: " + SUBJ_EN),
     "Hi,\n\nApproved, thanks.\n\nMary\n\nOn Sat, Nov 21, 2026 at 10:00 AM replyflow <approvals@example.com> wrote:\n" + q(ORIG_EN), cte="7bit"),
     "decision", "approve", "thanks.\n\nMary")
# ---- Outlook desktop
case("outlook_desktop_en", alternative(headers("RE: " + SUBJ_EN),
     "Reject - budget too high\n\nThanks,\nMary\n\nFrom: replyflow <approvals@example.com>\nSent: Saturday, November 21, 2026 10:00 AM\nTo: Mary Ma <mary@example.com>\nSubject: " + SUBJ_EN + "\n\n" + ORIG_EN + "\n",
     '<html><head><style>p.MsoNormal{margin:0}</style></head><body><div class="WordSection1"><p class="MsoNormal">Reject - budget too high<o:p></o:p></p><p class="MsoNormal">Thanks,<br>Mary</p><div><div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm"><p class="MsoNormal"><b>From:</b> replyflow &lt;approvals@example.com&gt;<br><b>Sent:</b> Saturday, November 21, 2026 10:00 AM<br><b>To:</b> Mary Ma<br><b>Subject:</b> ' + SUBJ_EN + '</p></div></div><p>' + html_lines(ORIG_EN) + '</p></div></body></html>', cte="quoted-printable"),
     "decision", "reject", "budget too high\n\nThanks,\nMary")
case("outlook_desktop_zh_gb2312", single(headers("答复: " + SUBJ_ZH, charset="gb2312"),
     "同意。\n\n发件人: 审批助手 <approvals@example.com>\n发送时间: 2026年11月21日 10:00\n收件人: 马丽 <mary@example.com>\n主题: " + SUBJ_ZH + "\n\n" + ORIG_ZH.replace("¥", "￥") + "\n", charset="gb2312"),
     "decision", "approve", "")
case("outlook_original_message", single(headers("RE: " + SUBJ_EN),
     "no\nPlease split the invoice by project.\n\n-----Original Message-----\nFrom: replyflow [mailto:approvals@example.com]\nSent: Saturday, November 21, 2026 10:00 AM\nTo: Mary Ma\nSubject: " + SUBJ_EN + "\n\n" + ORIG_EN + "\n", cte="quoted-printable"),
     "decision", "reject", "Please split the invoice by project.")
case("outlook_zh_original_message", single(headers("答复: " + SUBJ_ZH),
     "驳回：发票抬头不对\n\n-----原始邮件-----\n发件人: 审批助手 <approvals@example.com>\n发送时间: 2026年11月21日 10:00\n收件人: 马丽\n主题: " + SUBJ_ZH + "\n\n" + ORIG_ZH + "\n"),
     "decision", "reject", "发票抬头不对")
# ---- Outlook web / mobile
case("outlook_web", alternative(headers("RE: " + SUBJ_EN),
     "Approve\nOK for this trip only.\n\n________________________________\nFrom: replyflow <approvals@example.com>\nSent: Saturday, November 21, 2026 10:00\nTo: Mary Ma <mary@example.com>\nSubject: " + SUBJ_EN + "\n\n" + ORIG_EN + "\n",
     '<html><body><div style="font-family:Calibri">Approve</div><div>OK for this trip only.</div><div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1"><div id="divRplyFwdMsg" dir="ltr"><b>From:</b> replyflow<br><b>Sent:</b> Saturday, November 21, 2026 10:00<br></div><div>' + html_lines(ORIG_EN) + '</div></body></html>'),
     "decision", "approve", "OK for this trip only.")
case("outlook_web_html_only_zh", single(headers("回复: " + SUBJ_ZH),
     '<html><body><div>批准</div><div><br></div><hr tabindex="-1" style="display:inline-block;width:98%"><div id="divRplyFwdMsg" dir="ltr"><b>发件人:</b> 审批助手 &lt;approvals@example.com&gt;<br><b>发送时间:</b> 2026年11月21日 10:00<br><b>收件人:</b> 马丽<br><b>主题:</b> ' + SUBJ_ZH + '</div><div>' + html_lines(ORIG_ZH) + '</div></body></html>', "html"),
     "decision", "approve", "")
case("outlook_ios", single(headers("Re: " + SUBJ_EN),
     "Approve\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n________________________________\nFrom: replyflow <approvals@example.com>\nSent: Saturday, November 21, 2026 10:00:00 AM\nTo: Mary Ma <mary@example.com>\nSubject: " + SUBJ_EN + "\n\n" + ORIG_EN + "\n", cte="7bit" if False else "base64"),
     "decision", "approve", "")
case("outlook_android_zh", single(headers("回复: " + SUBJ_ZH),
     "不同意\n出差天数太长\n\n获取 Outlook for Android<https://aka.ms/ghei36>\n________________________________\n发件人: 审批助手 <approvals@example.com>\n发送时间: Saturday, November 21, 2026 10:00:00 AM\n收件人: 马丽 <mary@example.com>\n主题: " + SUBJ_ZH + "\n\n" + ORIG_ZH + "\n"),
     "decision", "reject", "出差天数太长\n\n获取 Outlook for Android<https://aka.ms/ghei36>")
# ---- Apple Mail / iPhone
case("iphone_en", single(headers("Re: " + SUBJ_EN),
     "Yes\n\nSent from my iPhone\n\n> On Nov 21, 2026, at 10:00, replyflow <approvals@example.com> wrote:\n> \n" + q(ORIG_EN) + "\n", cte="quoted-printable"),
     "decision", "approve", "")
case("iphone_zh", single(headers("回复：" + SUBJ_ZH),
     "同意，尽快安排\n\n发自我的iPhone\n\n> 在 2026年11月21日，10:00，审批助手 <approvals@example.com> 写道：\n> \n" + q(ORIG_ZH) + "\n"),
     "decision", "approve", "尽快安排")
case("apple_mail_zh", alternative(headers("Re: " + SUBJ_ZH),
     "批准\n金额没问题。\n\n> 2026年11月21日 10:00，审批助手 <approvals@example.com> 写道：\n> \n" + q(ORIG_ZH) + "\n",
     '<html><body style="word-wrap: break-word;">批准<div>金额没问题。</div><div><br><blockquote type="cite"><div>2026年11月21日 10:00，审批助手 &lt;approvals@example.com&gt; 写道：</div><br><div>' + html_lines(ORIG_ZH) + '</div></blockquote></div></body></html>', cte="quoted-printable"),
     "decision", "approve", "金额没问题。")
case("apple_mail_en_html_only", single(headers("Re: " + SUBJ_EN),
     '<html><body style="overflow-wrap: break-word;">Rejected.<div>We already booked this trip last week.</div><div><br><blockquote type="cite"><div>On Nov 21, 2026, at 10:00, replyflow &lt;approvals@example.com&gt; wrote:</div><br><div>' + html_lines(ORIG_EN) + '</div></blockquote></div></body></html>', "html", cte="quoted-printable"),
     "decision", "reject", "We already booked this trip last week.")
# ---- QQ Mail / Foxmail
qq_text = "同意\n\n\n------------------ 原始邮件 ------------------\n发件人: \"审批助手\"<approvals@example.com>;\n发送时间: 2026年11月21日(星期六) 上午10:00\n收件人: \"马丽\"<mary@example.com>;\n主题: " + SUBJ_ZH + "\n\n" + ORIG_ZH.replace("¥", "￥") + "\n"
case("qq_mail_gb18030", alternative(headers("回复：" + SUBJ_ZH, frm="马丽 <mary@example.com>", charset="gb18030"), qq_text,
     '<div>同意</div><div><br></div><div><br></div><div style="font-size: 12px;font-family: Arial Narrow;padding:2px 0 2px 0;">------------------&nbsp;原始邮件&nbsp;------------------</div><div style="font-size: 12px;background:#efefef;padding:8px;"><div><b>发件人:</b>&nbsp;"审批助手"&lt;approvals@example.com&gt;;</div><div><b>发送时间:</b>&nbsp;2026年11月21日(星期六) 上午10:00</div></div><div>' + html_lines(ORIG_ZH.replace("¥", "￥")) + '</div>', charset="gb18030"),
     "decision", "approve", "")
case("qq_mail_html_only_gbk", single(headers("回复：" + SUBJ_ZH, charset="gbk"),
     '<div>驳回</div><div>请先走预算调整流程</div><div><br></div><div style="font-size: 12px;font-family: Arial Narrow;padding:2px 0 2px 0;">------------------&nbsp;原始邮件&nbsp;------------------</div><div style="font-size: 12px;background:#efefef;padding:8px;"><div><b>发件人:</b>&nbsp;"审批助手"&lt;approvals@example.com&gt;;</div><div><b>发送时间:</b>&nbsp;2026年11月21日(星期六) 上午10:00</div><div><b>收件人:</b>&nbsp;"马丽"&lt;mary@example.com&gt;;</div></div><div>' + html_lines(ORIG_ZH.replace("¥", "￥")) + '</div>', "html", charset="gbk"),
     "decision", "reject", "请先走预算调整流程")
case("foxmail_gbk", single(headers("回复: " + SUBJ_ZH, charset="gbk"),
     "２\n发票缺失，请补齐后重新提交\n\n\n\n\nmary@example.com\n \n发件人： 审批助手\n发送时间： 2026-11-21 10:00\n收件人： 马丽\n主题： " + SUBJ_ZH + "\n" + ORIG_ZH.replace("¥", "￥") + "\n", charset="gbk"),
     "decision", "reject", "发票缺失，请补齐后重新提交\n\n\n\n\nmary@example.com")
case("foxmail_en_original", single(headers("Re: " + SUBJ_EN, charset="gb18030"),
     "1\n\n------------------ Original ------------------\nFrom:  \"replyflow\"<approvals@example.com>;\nDate:  Sat, Nov 21, 2026 10:00 AM\nTo:  \"Mary Ma\"<mary@example.com>;\nSubject:  " + SUBJ_EN + "\n\n" + ORIG_EN + "\n", charset="gb18030"),
     "decision", "approve", "")
# ---- NetEase 163 / Mail Master
case("netease_163_gbk", single(headers("Re:" + SUBJ_ZH, frm="马丽 <maryma@163.com>", charset="gbk"),
     "同意\n\n\n\n\n\n\n\n\n\n在 2026-11-21 10:00:00，\"审批助手\" <approvals@example.com> 写道：\n" + q(ORIG_ZH.replace("¥", "￥"), ">") + "\n", charset="gbk"),
     "decision", "approve", "")
case("netease_mail_master", single(headers("回复:" + SUBJ_ZH, frm="马丽 <maryma@163.com>", charset="gbk"),
     "不同意，预算太高\n\n\n\n| |\n马丽\n|\n|\nmaryma@163.com\n|\n发自网易邮箱大师\n---- 回复的原邮件 ----\n| 发件人 | 审批助手<approvals@example.com> |\n| 日期 | 2026年11月21日 10:00 |\n| 收件人 | 马丽<maryma@163.com> |\n| 主题 | " + SUBJ_ZH + " |\n" + ORIG_ZH.replace("¥", "￥") + "\n", charset="gbk"),
     "decision", "reject", "预算太高\n\n\n\n| |\n马丽\n|\n|\nmaryma@163.com\n|")
case("netease_mail_master_mobile", single(headers("回复:" + SUBJ_ZH, frm="马丽 <maryma@163.com>"),
     "可以\n\n发自网易邮箱大师\n在2026年11月21日 10:00，审批助手<approvals@example.com> 写道：\n" + q(ORIG_ZH) + "\n", cte="quoted-printable"),
     "decision", "approve", "")
# ---- Thunderbird
case("thunderbird", alternative(headers("Re: " + SUBJ_EN),
     "Approve\nLooks fine.\n\nOn 11/21/26 10:00, replyflow wrote:\n" + q(ORIG_EN) + "\n",
     '<html><body><p>Approve<br>Looks fine.</p><div class="moz-cite-prefix">On 11/21/26 10:00, replyflow wrote:<br></div><blockquote type="cite" cite="mid:rf.k3x9q2abmn4p5.2@example.com">' + html_lines(ORIG_EN) + '</blockquote></body></html>', cte="7bit" if False else "quoted-printable"),
     "decision", "approve", "Looks fine.")
case("thunderbird_html_only_zh", single(headers("Re: " + SUBJ_ZH),
     '<html><head><meta http-equiv="content-type" content="text/html; charset=UTF-8"></head><body><p>驳回 - 请附上会议邀请</p><div class="moz-cite-prefix">在 2026/11/21 10:00, 审批助手 写道:<br></div><blockquote type="cite">' + html_lines(ORIG_ZH) + '</blockquote></body></html>', "html"),
     "decision", "reject", "请附上会议邀请")
# ---- Alibaba / Tencent enterprise mail
case("alibaba_mail", single(headers("回复：" + SUBJ_ZH),
     "同意\n\n------------------------------------------------------------------\n发件人：审批助手 <approvals@example.com>\n发送时间：2026年11月21日(星期六) 10:00\n收件人：马丽 <mary@example.com>\n主　题：" + SUBJ_ZH + "\n\n" + ORIG_ZH + "\n"),
     "decision", "approve", "")
case("tencent_exmail", single(headers("回复：" + SUBJ_ZH, charset="gb18030"),
     "通过\n按标准报销\n\n\n------------------&nbsp;Original&nbsp;------------------\n".replace("&nbsp;", " ") + "From: &nbsp;\"审批助手\"<approvals@example.com>;\nDate: &nbsp;Sat, Nov 21, 2026 10:00 AM\nTo: &nbsp;\"马丽\"<mary@example.com>;\nSubject: &nbsp;" + SUBJ_ZH + "\n\n" + ORIG_ZH.replace("¥", "￥") + "\n", charset="gb18030"),
     "decision", "approve", "按标准报销")
# ---- Taiwan Outlook in Big5
SUBJ_TW = f"待審批「部門經理審批」差旅報銷 EXP-2026-0042 [{TAG}]"
orig_tw = f"""馬麗，您好：

有一項審批等待您處理。

任務：部門經理審批
流程：差旅報銷
業務編號：EXP-2026-0042
金額：NT$12,800

如何答覆：直接回覆本郵件，第一行寫您的決定：
  同意：回覆 1 或 同意
  駁回：回覆 2 或 駁回

回覆憑證 / Reply token: {TOKEN}"""
case("taiwan_outlook_big5", single(headers("回覆: " + SUBJ_TW, frm="馬麗 <mary@example.com>", charset="big5"),
     "同意\n請注意住宿標準\n\n寄件者: 審批助手 <approvals@example.com>\n寄件日期: 2026年11月21日 上午 10:00\n收件者: 馬麗 <mary@example.com>\n主旨: " + SUBJ_TW + "\n\n" + orig_tw.encode("big5", "replace").decode("big5") + "\n", charset="big5"),
     "decision", "approve", "請注意住宿標準")
# ---- ISO-2022-JP
case("iso2022jp", single(headers("Re: " + SUBJ_EN, frm="Sato <sato@example.jp>"),
     "Approve\nよろしくお願いします。\n\n2026年11月21日(土) 10:00 replyflow <approvals@example.com>:\n" + q(ORIG_EN.replace(TOKEN_LINE, "Reply token: " + TOKEN).replace("–", "-")) + "\n", charset="iso-2022-jp", cte="7bit"),
     "decision", "approve", "よろしくお願いします。")
# ---- encodings, numbers, width, comments
case("qp_utf8_fullwidth", single(headers("Re: " + SUBJ_ZH),
     "同意！\n预算合理，可以报销。\n\n> " + TOKEN_LINE + "\n", cte="quoted-printable"),
     "decision", "approve", "预算合理，可以报销。")
case("fullwidth_only", single(headers("Re: " + SUBJ_ZH), "同意！\n\n" + q(ORIG_ZH)), "decision", "approve", "")
case("fullwidth_latin", single(headers("Re: " + SUBJ_EN), "ＡＰＰＲＯＶＥ\n\n" + q(ORIG_EN)), "decision", "approve", "")
case("number_1", single(headers("Re: " + SUBJ_ZH), "1\n\n" + q(ORIG_ZH), cte="7bit" if False else "base64"), "decision", "approve", "")
case("number_fullwidth_2", single(headers("Re: " + SUBJ_ZH), "２\n差旅标准不符\n\n" + q(ORIG_ZH)), "decision", "reject", "差旅标准不符")
case("same_line_comment_en", single(headers("Re: " + SUBJ_EN), "Approve - within budget\n\n" + q(ORIG_EN), cte="7bit"), "decision", "approve", "within budget")
case("following_lines_comment", single(headers("Re: " + SUBJ_EN), "OK,\nPlease book the cheaper hotel.\nThanks\n\n" + q(ORIG_EN), cte="7bit"), "decision", "approve", "Please book the cheaper hotel.\nThanks")
case("lgtm_lower", single(headers("Re: " + SUBJ_EN), "lgtm!\n\n" + q(ORIG_EN), cte="7bit"), "decision", "approve", "")
# ---- negations
case("neg_butongyi", single(headers("Re: " + SUBJ_ZH), "不同意\n\n" + q(ORIG_ZH)), "decision", "reject", "")
case("neg_bupizhun", single(headers("Re: " + SUBJ_ZH), "不批准，材料不全\n\n" + q(ORIG_ZH)), "decision", "reject", "材料不全")
case("neg_bukeyi", single(headers("Re: " + SUBJ_ZH), "不可以。\n\n" + q(ORIG_ZH)), "decision", "reject", "")
case("neg_not_approved", single(headers("Re: " + SUBJ_EN), "Not approved - missing receipts\n\n" + q(ORIG_EN), cte="7bit"), "decision", "reject", "missing receipts")
case("neg_do_not_approve", single(headers("Re: " + SUBJ_EN), "Do not approve, the vendor is not on the list.\n\n" + q(ORIG_EN), cte="7bit"), "decision", "reject", "the vendor is not on the list.")
case("neg_only_approve_outcome", single(headers("Re: " + SUBJ_ZH), "不同意\n\n" + q(ORIG_ZH)), "ambiguous", None, "", outcomes="approve,acknowledge")
# ---- ambiguous / delegate
case("ambiguous_zh", single(headers("Re: " + SUBJ_ZH), "同意 驳回\n\n" + q(ORIG_ZH)), "ambiguous", None, "同意 驳回")
case("ambiguous_en", single(headers("Re: " + SUBJ_EN), "approve or reject?\n\n" + q(ORIG_EN), cte="7bit"), "ambiguous", None, "approve or reject?")
case("delegate_en", single(headers("Re: " + SUBJ_EN), "delegate bob@example.com\nHe owns this budget.\n\n" + q(ORIG_EN), cte="7bit"), "delegate", None, "He owns this budget.", delegate_to="bob@example.com")
case("delegate_zh", single(headers("Re: " + SUBJ_ZH), "转交给 zhang.wei@example.com，他负责这个项目\n\n" + q(ORIG_ZH)), "delegate", None, "他负责这个项目", delegate_to="zhang.wei@example.com")
# ---- auto-replies, bounce, empty, signature only
case("ooo_auto_submitted", single(headers("Out of Office: " + SUBJ_EN, extra="Auto-Submitted: auto-replied\nX-Auto-Response-Suppress: All\n"),
     "I am out of the office until 30 November. Approve requests will be handled when I return.\n", cte="7bit"),
     "auto_reply", None, "")
case("ooo_zh_subject", single(headers("自动回复: " + SUBJ_ZH), "您好，我正在休假，11月30日返回。同意类事项请联系王经理。\n"), "auto_reply", None, "")
b = "bnd_dsn_01"
dsn = (f"From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\nTo: {BOX}\nSubject: Undelivered Mail Returned to Sender\n"
       f"Date: Sat, 21 Nov 2026 10:00:05 +0800\nMessage-ID: <dsn.1@mx.example.com>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
       f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"{b}\"\n\n"
       f"--{b}\nContent-Type: text/plain; charset=us-ascii\n\nThis is the mail system at host mx.example.com.\n\nI'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients.\n\n<mary@example.com>: host mail.example.com said: 550 5.1.1 User unknown\n\n"
       f"--{b}\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; mary@example.com\nAction: failed\nStatus: 5.1.1\n\n"
       f"--{b}\nContent-Type: text/rfc822-headers\n\nFrom: approvals@example.com\nTo: mary@example.com\nMessage-ID: {MSGID}\nSubject: Approval needed\n\n--{b}--\n")
case("bounce_dsn", dsn.encode(), "bounce", None, "")
case("empty_reply", single(headers("Re: " + SUBJ_EN), "\n\nOn Sat, Nov 21, 2026 at 10:00 AM replyflow <approvals@example.com> wrote:\n" + q(ORIG_EN), cte="7bit"), "no_decision", None, "", token_source="plus_address")
case("signature_only", single(headers("Re: " + SUBJ_EN), "\n-- \nMary Ma\nFinance, Example Corp\n\nOn Sat, Nov 21, 2026 at 10:00 AM replyflow <approvals@example.com> wrote:\n" + q(ORIG_EN), cte="7bit"), "no_decision", None, "")
case("iphone_signature_only", single(headers("Re: " + SUBJ_ZH), "\n发自我的iPhone\n\n> 在 2026年11月21日，10:00，审批助手 <approvals@example.com> 写道：\n" + q(ORIG_ZH)), "no_decision", None, "")
case("question_no_decision", single(headers("Re: " + SUBJ_EN), "Which project is this for?\n\n" + q(ORIG_EN), cte="7bit"), "no_decision", None, "Which project is this for?")
# ---- custom outcome "return", button-prefilled replies
ORIG_ZH3 = ORIG_ZH.replace("  驳回：回复 2 或 驳回 或 不同意", "  驳回：回复 2 或 驳回 或 不同意\n  退回修改：回复 3 或 退回修改 或 退回")
case("return_custom", single(headers("Re: " + SUBJ_ZH), "退回修改\n请补充发票原件\n\n" + q(ORIG_ZH3)), "decision", "return", "请补充发票原件", outcomes="approve,reject,return")
case("return_number_3", single(headers("Re: " + SUBJ_ZH), "3\n\n" + q(ORIG_ZH3)), "decision", "return", "", outcomes="approve,reject,return")
case("return_tuihui_without_return", single(headers("Re: " + SUBJ_ZH), "退回\n\n" + q(ORIG_ZH)), "decision", "reject", "")
case("button_prefilled_return", single(headers("Re: " + SUBJ_ZH, to=f"approvals@example.com"), "退回修改\n\n" + TOKEN_LINE + "\n"), "decision", "return", "", outcomes="approve,reject,return", token_source="body")
case("button_prefilled_approve_en", single(headers("Re: " + SUBJ_EN, to="approvals@example.com"), "Approve\n\nLooks good to me.\n\n" + TOKEN_LINE + "\n", cte="7bit" if False else "base64"), "decision", "approve", "Looks good to me.", token_source="body")

# ---- negations around the word (appended: earlier cases keep their Message-IDs)
case("neg_tongyi_buliao", single(headers("Re: " + SUBJ_ZH), "同意不了，预算超标\n\n" + q(ORIG_ZH)), "decision", "reject", "预算超标")
case("neg_pizhun_buliao_gb18030", single(headers("回复：" + SUBJ_ZH, charset="gb18030"), "批准不了\n材料不全\n\n------------------ 原始邮件 ------------------\n发件人: \"审批助手\"<approvals@example.com>;\n发送时间: 2026年11月21日(星期六) 上午10:00\n收件人: \"马丽\"<mary@example.com>;\n\n" + ORIG_ZH, charset="gb18030"), "decision", "reject", "材料不全")
case("neg_buneng_tongyi", single(headers("Re: " + SUBJ_ZH), "不能同意，发票不全\n\n" + q(ORIG_ZH)), "decision", "reject", "发票不全")
case("neg_meifa_pizhun", single(headers("Re: " + SUBJ_ZH), "没法批准\n\n发自我的iPhone\n\n> 在 2026年11月21日，10:00，审批助手 <approvals@example.com> 写道：\n" + q(ORIG_ZH)), "decision", "reject", "")
case("neg_cant_approve_iphone", single(headers("Re: " + SUBJ_EN), "Can\u2019t approve - receipts missing\n\nSent from my iPhone\n\n> On Nov 21, 2026, at 10:00 AM, replyflow <approvals@example.com> wrote:\n" + q(ORIG_EN), cte="7bit"), "decision", "reject", "receipts missing")
case("neg_wont_approve", single(headers("Re: " + SUBJ_EN), "I won't approve this trip.\n\nOn Sat, Nov 21, 2026 at 10:00 AM replyflow <approvals@example.com> wrote:\n" + q(ORIG_EN), cte="7bit"), "decision", "reject", "this trip.")
b = "bnd_dsn_02"
dsn2 = (f"From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\nTo: approvals@example.com\nSubject: Delivery Status Notification (Failure)\n"
        f"Date: Sat, 21 Nov 2026 10:00:07 +0800\nMessage-ID: <dsn.2@mx.example.com>\nMIME-Version: 1.0\n"
        f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"{b}\"\n\n"
        f"--{b}\nContent-Type: text/plain; charset=utf-8\n\nDelivery to the following recipient failed permanently:\n\n     zhang.wei@example.com\n\n"
        f"--{b}\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\nFinal-Recipient: rfc822; zhang.wei@example.com\nAction: failed\nStatus: 5.2.2\n"
        f"Diagnostic-Code: smtp; 552 5.2.2 The email account that you tried to reach is over quota\n\n"
        f"--{b}\nContent-Type: message/rfc822\n\nFrom: approvals@example.com\nTo: zhang.wei@example.com\nMessage-ID: {MSGID}\nSubject: Approval needed\nContent-Type: text/plain\n\nAn approval is waiting.\n\n--{b}--\n")
case("bounce_dsn_rfc822", dsn2.encode(), "bounce", None, "")

with open(os.path.join(HERE, "cases.json"), "w", encoding="utf-8") as f:
    json.dump(CASES, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(len(CASES), "cases")
