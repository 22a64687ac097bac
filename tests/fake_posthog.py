#!/usr/bin/env python3
"""A local stand-in for the PostHog actions REST API, for phfs's tests and demo.

It behaves like the real server wherever a client can tell: personal API keys with scopes
and project restrictions, the {type, code, detail, attr} error bodies (401 vs 403),
validation and normalisation of actions on create and update, soft delete and the bare 405
on DELETE, the three shapes the action list has had, DRF limit/offset pagination of
/api/projects/, rate limiting with 429 and Retry-After. The seeded data is deterministic
and has awkward names on purpose.

Tests drive it through a control API under /_control/ on the same port (JSON, no auth, never
in the request log): add latency, make the next N matching requests fail (5xx, 429, reset,
stall, garbage, truncated, huge or deeply nested bodies), change actions behind the
client's back, switch the list shape, read and clear the request log, reset everything.

    /usr/bin/python3 tests/fake_posthog.py --port 0 --port-file /tmp/port

    GET  /_control/log[?since=SEQ]   {"requests": [{seq, method, path, query, status, body,
                                      raw_body, auth, key, time}]}; status 0: no answer
    POST /_control/log/clear
    POST /_control/latency           {"ms": N}
    POST /_control/fail              {"count", "mode", "method"?, "path"? (regex),
                                      "retry_after"?, "stall_seconds"?}; modes: FAULT_MODES
    POST /_control/fail/clear        also releases stalled connections
    POST /_control/list_shape        {"shape": "all"|"count"|"paged", "page_size"?}
    POST /_control/action            {"project", "id"?, "set": {...}}: raw change or create
    GET  /_control/state             {"projects": [{id, name, actions (deleted too)}]}
    POST /_control/reset             seed data, settings of the command line, empty log
    POST /_control/rate_limit        {"per_minute": N}  (0: off)
    POST /_control/current_project   {"id": N}: what @current means from now on

Standard library only. Without --keys-file or $FAKE_POSTHOG_KEYS the one key is
phx_demo_0000000000000000000000000000000000000000, with every scope.
"""

import argparse
import collections
import csv
import hashlib
import io
import json
import math
import os
import random
import re
import select
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

DEMO_KEY = "phx_demo_0000000000000000000000000000000000000000"
MAX_BODY = 20 * 1024 * 1024          # the server's DATA_UPLOAD_MAX_MEMORY_SIZE
DELETED_PER_PROJECT = 3
LOG_LIMIT = 200000                   # request log entries kept
SEED_EPOCH = datetime(2023, 3, 6, 9, 0, tzinfo=timezone.utc)
ORG_UUID = "018c3f2a-5b1e-7000-8000-00000000c0de"
JSON_TYPE = "application/json"
MISSING = object()

STEP_KEYS = ("event", "properties", "selector", "selector_regex", "tag_name", "text",
             "text_matching", "href", "href_matching", "url", "url_matching")
# String step fields, and whether the server trims them (event, tag_name, text and href
# keep their whitespace).
STEP_TEXT = {"event": False, "selector": True, "tag_name": False, "text": False,
             "href": False, "url": True}
MATCHING = ("contains", "regex", "exact")
PROPERTY_TYPES = {"event", "person", "element", "cohort", "group", "session", "hogql",
                  "data_warehouse", "data_warehouse_person_property", "feature",
                  "recording", "log_entry", "event_metadata"}
# Writable fields copied as validated; last_calculated_at and pinned_at have rules.
PLAIN_FIELDS = ("name", "description", "tags", "post_to_slack", "slack_message_format",
                "steps", "deleted")

USERS = [
    {"id": 1, "uuid": "0188d0a4-6a0e-0000-6e1c-5c4d1a2b3c01",
     "distinct_id": "Ld9cQwT2x8mK4vB7nR1sY6pZ3aE5fH0jU2iO8gW4lXk", "first_name": "Ada",
     "last_name": "Lovelace", "email": "ada@example.com", "is_email_verified": True,
     "hedgehog_config": None, "role_at_organization": "engineering"},
    {"id": 2, "uuid": "0188d0a4-6a0e-0000-6e1c-5c4d1a2b3c02",
     "distinct_id": "Qp3nV8bX1cM6zL4kJ9hG2fD7sA5wE0rT8yU3iO1pN6m", "first_name": "Grace",
     "last_name": "Hopper", "email": "grace@example.com", "is_email_verified": False,
     "hedgehog_config": None, "role_at_organization": "product"},
]
API_USER = USERS[0]                  # every key belongs to this user

PROJECT_NAMES = ["Web app", "Mobile", "Data Warehouse / Données ✓"]
# The first live actions of the first project.
AWKWARD_NAMES = [
    "Регистрация", "登録", "Café crème", "signup/complete", "..", ".hidden", "-dash-first",
    "line1\nline2\t\u0001x", ("Très long nom d'action " * 14)[:300], None, "Signed up",
    "signed-up", "SIGNED UP!", "!!!", "🚀 Launched rocket 🎉", "../../etc/passwd",
    "Cafe\u0301 decomposed",
]
VERBS = ["Clicked", "Viewed", "Submitted", "Opened", "Completed", "Started", "Downloaded",
         "Shared", "Searched", "Upgraded", "Cancelled", "Invited"]
OBJECTS = ["buy button", "pricing page", "signup form", "onboarding checklist", "invoice",
           "CSV export", "dashboard", "settings", "free trial", "newsletter", "team member",
           "help article"]
EVENTS = ["signed_up", "purchase_completed", "subscription_renewed", "file_uploaded",
          "report_exported", "invite_sent", "plan_changed", "search_performed"]
PATHS = ["/pricing", "/signup", "/checkout", "/docs/getting-started", "/blog/launch-week",
         "/settings/billing", "/onboarding/step-2"]
SELECTORS = [("button.buy-now", "button", "Buy now", "/checkout"),
             ("a[data-attr=\"upgrade\"]", "a", "Upgrade plan", "/billing"),
             ("#signup-form > button", "button", "Create account", None),
             ("nav .menu-item:nth-child(3)", "a", "Docs", "/docs")]
DESCRIPTIONS = ["Counts users who reached this step of the funnel.",
                "Used by the weekly growth report.",
                "Fires once per session; see the tracking plan.",
                "Owned by the billing squad. Do not rename without asking.",
                "Ünïcode description with “quotes” and\na second line."]
TAGS = ["growth", "billing", "onboarding", "beta", "marketing", "core", "mobile",
        "experiment"]


# ----------------------------------------------------------------------------- utilities


def fmt_time(dt):
    """DRF's rendering: ISO 8601 in UTC with 'Z'; microseconds only when nonzero."""
    return dt.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def now_str():
    return fmt_time(datetime.now(timezone.utc))


def parse_datetime(value):
    """Django's parse_datetime as DRF applies it: aware datetime, or None."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def dumps(obj):
    """Compact UTF-8 JSON, as DRF's JSONRenderer writes it."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:           # lone surrogates set through /_control/action
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _strict_constant(token):
    raise ValueError("Out of range float values are not JSON compliant: %r" % token)


def parse_json(raw):
    """(value, None), or (None, the message DRF's JSONParser gives)."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_strict_constant), None
    except (ValueError, RecursionError) as e:
        return None, "JSON parse error - %s" % e


def tname(value):
    return type(value).__name__


def selector_regex(selector):
    """Stands in for the server's CSS-selector-to-regex translation: stable, and derived
    from the selector only."""
    if selector is None:
        return None
    parts = [re.escape(p) for p in re.split(r"\s*>\s*|\s+", selector) if p]
    return ("(^|;)" + ".*;".join(parts) +
            r"([-_a-zA-Z0-9\.:\"= \[\]]*?)?($|;|:([^;^\s]*(;|$|\s)))")


def bytecode_error(steps):
    """What a failed HogQL compilation looks like: the save succeeds and the error is
    stored on the action."""
    for step in steps if isinstance(steps, list) else ():
        props = step.get("properties") if isinstance(step, dict) else None
        for prop in props if isinstance(props, list) else ():
            ptype = prop.get("type", "event") if isinstance(prop, dict) else None
            if ptype not in PROPERTY_TYPES:
                return "Unsupported property type: %s" % (ptype,)
    return None


def user_access_level(created_by):
    ours = isinstance(created_by, dict) and created_by.get("id") == API_USER["id"]
    return "manager" if ours else "editor"


# -------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error response in drf-exceptions-hog's shape (first error only)."""

    def __init__(self, status, type_, code, detail, attr=None, headers=()):
        super().__init__(detail)
        self.status = status
        self.body = {"type": type_, "code": code, "detail": detail, "attr": attr}
        self.headers = list(headers)


def invalid(code, detail, attr):
    return ApiError(400, "validation_error", code, detail, attr)


def denied(detail):
    return ApiError(403, "authentication_error", "permission_denied", detail)


def not_found(detail="Not found."):
    return ApiError(404, "invalid_request", "not_found", detail)


def server_error():
    return ApiError(500, "server_error", "error", "A server error occurred.")


def throttled(wait):
    if wait is None:                     # DRF could not compute a wait: no header
        return ApiError(429, "throttled_error", "throttled", "Request was throttled.")
    wait = max(1, int(math.ceil(wait)))
    return ApiError(429, "throttled_error", "throttled",
                    "Request was throttled. Expected available in %d second%s."
                    % (wait, "" if wait == 1 else "s"), headers=[("Retry-After", str(wait))])


# ---------------------------------------------------------------------------- validation
# DRF collects every field error but drf-exceptions-hog reports only the first, in
# serializer field order; raising at the first failure gives the same answer.

_SURROGATE = re.compile("[\ud800-\udfff]")


def v_char(value, attr, null=False, blank=False, trim=True, max_length=None):
    """DRF's CharField: numbers become strings, blank is checked after trimming."""
    if value is None:
        if null:
            return None
        raise invalid("null", "This field may not be null.", attr)
    if value == "" or (trim and str(value).strip() == ""):
        if not blank:
            raise invalid("blank", "This field may not be blank.", attr)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise invalid("invalid_input", "Not a valid string.", attr)
    value = str(value).strip() if trim else str(value)
    if max_length is not None and len(value) > max_length:
        raise invalid("max_length", "Ensure this field has no more than %d characters."
                      % max_length, attr)
    if "\x00" in value:
        raise invalid("null_characters_not_allowed", "Null characters are not allowed.",
                      attr)
    m = _SURROGATE.search(value)
    if m:
        raise invalid("surrogate_characters_not_allowed",
                      "Surrogate characters are not allowed: U+%X." % ord(m.group()), attr)
    return value


_TRUE = {"t", "T", "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
         "1", 1, True}
_FALSE = {"f", "F", "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off",
          "OFF", "0", 0, 0.0, False}


def v_bool(value, attr):
    if value is None:
        raise invalid("null", "This field may not be null.", attr)
    try:
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
    except TypeError:                    # unhashable: a list or an object
        pass
    raise invalid("invalid_input", "Must be a valid boolean.", attr)


def v_list(value, attr, null=False):
    if value is None:
        if null:
            return None
        raise invalid("null", "This field may not be null.", attr)
    if not isinstance(value, list):
        raise invalid("not_a_list", 'Expected a list of items but got type "%s".'
                      % tname(value), attr)
    return value


def v_datetime(value, attr, null):
    if value is None:
        if null:
            return None
        raise invalid("null", "This field may not be null.", attr)
    dt = parse_datetime(value)
    if dt is None:
        raise invalid("invalid_input", "Datetime has wrong format. Use one of these formats "
                      "instead: YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].", attr)
    return dt


def v_step(raw, attr):
    """One step, normalised: every key present, in the server's order."""
    if not isinstance(raw, dict):
        raise invalid("invalid_input", "Invalid data. Expected a dictionary, but got %s."
                      % tname(raw), attr + "__non_field_errors")
    out = {}
    for key in STEP_KEYS:
        value, a = raw.get(key, MISSING), "%s__%s" % (attr, key)
        if key == "selector_regex":
            out[key] = None              # computed below; this keeps its place
        elif key in STEP_TEXT:
            out[key] = None if value is MISSING else v_char(value, a, null=True,
                                                            trim=STEP_TEXT[key])
        elif key.endswith("_matching"):
            if value is MISSING:         # the dataclass default; an explicit null stays
                out[key] = "contains" if key == "url_matching" else None
            elif value is None or str(value) in MATCHING:
                out[key] = None if value is None else str(value)
            else:
                raise invalid("invalid_choice", '"%s" is not a valid choice.' % (value,), a)
        else:                            # properties: a list of objects, nothing more
            props = None if value is MISSING else v_list(value, a, null=True)
            for i, item in enumerate(props or ()):
                if item is None:
                    raise invalid("null", "This field may not be null.", "%s__%d" % (a, i))
                if not isinstance(item, dict):
                    raise invalid("not_a_dict", 'Expected a dictionary of items but got '
                                  'type "%s".' % tname(item), "%s__%d" % (a, i))
            out[key] = props
    out["selector_regex"] = selector_regex(out["selector"])
    return out


def v_steps(value):
    if value is None:
        raise invalid("null", "This field may not be null.", "steps")
    if not isinstance(value, list):
        raise invalid("not_a_list", 'Expected a list of items but got type "%s".'
                      % tname(value), "steps__non_field_errors")
    return [v_step(s, "steps__%d" % i) for i, s in enumerate(value)]


def validate_action(p, live_actions, instance_id=None):
    """Validates a create or update body against the project's live actions; returns the
    normalised writable fields present. Unknown and read-only keys are ignored."""
    if not isinstance(p, dict):
        raise invalid("invalid_input", "Invalid data. Expected a dictionary, but got %s."
                      % tname(p), None)
    out = {}
    if "name" in p:
        out["name"] = v_char(p["name"], "name", null=True, max_length=400)
    if "description" in p:
        out["description"] = v_char(p["description"], "description", blank=True)
    if "tags" in p:
        out["tags"] = v_list(p["tags"], "tags")
    if "post_to_slack" in p:
        out["post_to_slack"] = v_bool(p["post_to_slack"], "post_to_slack")
    if "slack_message_format" in p:
        out["slack_message_format"] = v_char(p["slack_message_format"],
                                             "slack_message_format", blank=True,
                                             max_length=1200)
    if "steps" in p:
        out["steps"] = v_steps(p["steps"])
    if "deleted" in p:
        out["deleted"] = v_bool(p["deleted"], "deleted")
    if "last_calculated_at" in p:
        out["last_calculated_at"] = v_datetime(p["last_calculated_at"],
                                               "last_calculated_at", False)
    if "pinned_at" in p:
        out["pinned_at"] = v_datetime(p["pinned_at"], "pinned_at", True)
    if "_create_in_folder" in p:
        v_char(p["_create_in_folder"], "_create_in_folder", blank=True)
    # Object-level validation only runs once every field is valid. The name is unique
    # among live actions, checked only when sent (an explicit null included).
    if "name" in out:
        for other in live_actions:
            if other.id != instance_id and other.data.get("name") == out["name"]:
                raise invalid("unique", "This project already has an action with this "
                              "name, ID %s" % other.id, "name")
    if "tags" in out:
        if not all(isinstance(t, str) for t in out["tags"]):
            raise server_error()         # the server calls .strip() on each tag
        out["tags"] = sorted({t.strip().lower() for t in out["tags"]})
    return out


def apply_fields(data, v, creating):
    for k in PLAIN_FIELDS:
        if k in v:
            data[k] = v[k]
    if "last_calculated_at" in v:
        data["last_calculated_at"] = fmt_time(v["last_calculated_at"])
    if "pinned_at" in v:
        if creating or v["pinned_at"] is None:
            data["pinned_at"] = v["pinned_at"] and fmt_time(v["pinned_at"])
        elif not data.get("pinned_at"):
            # An update pins with the server's clock, whatever the value sent, and leaves
            # an already pinned action as it was.
            data["pinned_at"] = now_str()
    data["bytecode_error"] = bytecode_error(data.get("steps"))


# --------------------------------------------------------------------------------- store


class Action:
    """An action's data and its serialised JSON, built on demand and dropped on every
    change: a list of 1000 actions is a join of these."""
    __slots__ = ("id", "data", "_blob")

    def __init__(self, aid, data):
        self.id, self.data, self._blob = aid, data, None

    def blob(self):
        if self._blob is None:
            self._blob = dumps(self.data)
        return self._blob

    def changed(self):
        self._blob = None

    @property
    def live(self):
        return not self.data.get("deleted")


def new_action_data(aid, pid, created, created_by):
    return {"id": aid, "name": None, "description": "", "tags": [], "post_to_slack": False,
            "slack_message_format": "", "steps": [], "created_at": created,
            "created_by": created_by, "deleted": False, "is_calculating": False,
            "last_calculated_at": created, "team_id": pid, "is_action": True,
            "bytecode_error": None, "pinned_at": None, "creation_context": None,
            "user_access_level": user_access_level(created_by)}


class Project:
    """A project; its actions are generated on first use, so that a server with
    100 x 1000 actions starts at once."""

    def __init__(self, seed, index, pid, first_id, n_live):
        self.seed, self.index, self.id = seed, index, pid
        self.first_id, self.n_live = first_id, n_live
        name = PROJECT_NAMES[index] if index < len(PROJECT_NAMES) else "Project %d" % pid
        digest = hashlib.sha256(("%s:%s" % (seed, pid)).encode()).hexdigest()
        self.info = {
            "id": pid, "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, "fake-posthog:%s:%s"
                                              % (seed, pid))),
            "organization": ORG_UUID, "project_id": pid, "api_token": "phc_" + digest[:43],
            "name": name, "completed_snippet_onboarding": True,
            "has_completed_onboarding_for": {"product_analytics": True},
            "ingested_event": True, "is_demo": False,
            "timezone": ["UTC", "Europe/Berlin", "America/New_York"][index % 3],
            "access_control": False}
        self._actions = None

    @property
    def name(self):
        return self.info["name"]

    @property
    def actions(self):
        """{id: Action} in id order, soft-deleted ones included."""
        if self._actions is None:
            self._actions = {a.id: a for a in seed_actions(self)}
        return self._actions

    def live(self):
        return [a for a in self.actions.values() if a.live]


def seed_layout(n_live):
    """(seeded actions per project, positions of the soft-deleted ones): spread out so
    that the ids of a listing have gaps."""
    n_del = DELETED_PER_PROJECT if n_live else 0
    total = n_live + n_del
    return total, {total * (k + 1) // (n_del + 1) for k in range(n_del)}


def seed_steps(rng, aid):
    """Steps of a seeded action. Exactly the actions whose id is a multiple of 3 mention
    the page-view event anywhere (tests grep for it)."""
    if aid % 3 == 0:
        path = rng.choice(PATHS)
        mode = rng.choice(["contains", "exact", "regex", None, MISSING])
        url = {"regex": "^https://app\\.example\\.com%s(\\?.*)?$" % path,
               "exact": "https://app.example.com" + path}.get(mode, path)
        steps = [{"event": "$pageview", "url": url}]
        if mode is not MISSING:
            steps[0]["url_matching"] = mode
        if rng.random() < 0.3:
            steps.append({"event": rng.choice(EVENTS)})
        return steps
    kind = rng.randrange(6)
    if kind < 2:
        sel, tag, text, href = rng.choice(SELECTORS)
        step = {"event": "$autocapture", "selector": sel, "tag_name": tag, "text": text,
                "text_matching": "exact"}
        if href:
            step.update(href=href, href_matching=rng.choice(MATCHING))
        return [step]
    if kind == 2:
        return [{"event": rng.choice(EVENTS), "properties": [
            {"key": "plan", "value": rng.choice(["pro", "team", "scale"]),
             "operator": "exact", "type": "event"},
            {"key": "$browser", "value": ["Chrome", "Firefox"], "operator": "exact",
             "type": "event"}]}]
    if kind == 3:
        return [{"event": "$screen", "properties": [
            {"key": "$screen_name", "value": "Checkout", "operator": "icontains",
             "type": "event"}]}]
    if kind == 4:
        return [{"event": rng.choice(EVENTS)},
                {"event": rng.choice(EVENTS), "properties": [
                    {"key": "email", "value": "@example.com", "operator": "not_icontains",
                     "type": "person"}]}]
    return []


def seed_actions(project):
    rng = random.Random("%s:%s" % (project.seed, project.id))
    total, deleted_at = seed_layout(project.n_live)
    out, n_live, n_del, first_name = [], 0, 0, None
    for pos in range(total):
        aid = project.first_id + pos
        if pos in deleted_at:
            # The first reuses a live name: soft-deleting frees a name.
            name = [first_name if project.index else "Signed up", "Legacy checkout flow",
                    "Old onboarding funnel (deprecated)"][n_del % 3]
            n_del += 1
        else:
            if project.index == 0 and n_live < len(AWKWARD_NAMES):
                name = AWKWARD_NAMES[n_live]
            else:
                name = "%s %s %d" % (rng.choice(VERBS), rng.choice(OBJECTS), n_live + 1)
            n_live += 1
            first_name = name if first_name is None else first_name
        created = SEED_EPOCH + timedelta(minutes=37 * aid,
                                         microseconds=(aid * 7919) % 999999 + 1)
        data = new_action_data(aid, project.id, fmt_time(created),
                               (USERS[0], USERS[0], USERS[1], None)[aid % 4])
        data["name"] = name
        if rng.random() < 0.4:
            data["description"] = rng.choice(DESCRIPTIONS)
        if rng.random() < 0.35:
            data["tags"] = sorted(rng.sample(TAGS, rng.randint(1, 3)))
        steps = seed_steps(rng, aid)
        if pos == 8:                     # one compile error per project
            steps.append({"event": rng.choice(EVENTS), "properties": [
                {"key": "x", "value": "1", "type": "unknown_type"}]})
        data["steps"] = [v_step(s, "steps") for s in steps]
        data["bytecode_error"] = bytecode_error(data["steps"])
        if aid % 11 == 0:
            data["pinned_at"] = fmt_time(created + timedelta(days=2))
        if aid % 13 == 0:
            data["post_to_slack"] = True
            data["slack_message_format"] = "[user.name] did [action.name]"
        data["deleted"] = pos in deleted_at
        out.append(Action(aid, data))
    return out


class Store:
    """Projects 1..N and their actions; ids are global and handed out in blocks per
    project, so a project's seed never depends on another one."""

    def __init__(self, n_projects, n_actions, seed):
        total, _ = seed_layout(n_actions)
        self.projects = {i + 1: Project(seed, i, i + 1, 1 + i * total, n_actions)
                         for i in range(n_projects)}
        self.next_id = 1 + n_projects * total

    def find_action(self, aid):
        for p in self.projects.values():
            if aid in p.actions:
                return p.actions[aid]
        return None


# ------------------------------------------------------------------------------ listings


def query_get(q, key):
    """QueryDict.get: the last value of a repeated parameter."""
    v = q.get(key)
    return v[-1] if v else None


def positive_int(text, strict=False, default=None):
    try:
        n = int(text)
    except (TypeError, ValueError):
        return default
    return default if n < 0 or (strict and n == 0) else n


def set_query_param(url, key, val):
    """DRF's replace_query_param (val None: remove_query_param); it sorts the query."""
    scheme, netloc, path, query, frag = urlsplit(url)
    qd = parse_qs(query, keep_blank_values=True)
    qd.pop(key, None)
    if val is not None:
        qd[key] = [str(val)]
    return urlunsplit((scheme, netloc, path, urlencode(sorted(qd.items()), doseq=True), frag))


def limit_offset(q, url, count, default_limit):
    """DRF's LimitOffsetPagination: (offset, limit, next, previous)."""
    limit = positive_int(query_get(q, "limit"), strict=True, default=default_limit)
    offset = positive_int(query_get(q, "offset"), default=0)
    nxt = prev = None
    if offset + limit < count:
        nxt = set_query_param(set_query_param(url, "limit", limit), "offset", offset + limit)
    if offset > 0:
        prev = set_query_param(set_query_param(url, "limit", limit), "offset",
                               offset - limit if offset - limit > 0 else None)
    return offset, limit, nxt, prev


def _nulls_last(value):
    return (1, 0) if value is None else (0, value)


def order_actions(actions, ordering):
    """Default -last_calculated_at; `ordering` one of name, created_at, pinned_at,
    created_by with an optional '-'; ties by name. Postgres sorts NULLs last ascending and
    first descending, which is what reversing gives."""
    def text(v):
        return None if v is None else str(v)

    def creator(a):
        c = a.data.get("created_by")
        return (str(c.get("first_name")), str(c.get("last_name"))) if isinstance(
            c, dict) else None

    keys = {"name": lambda a: text(a.data.get("name")),
            "created_at": lambda a: parse_datetime(a.data.get("created_at")),
            "pinned_at": lambda a: parse_datetime(a.data.get("pinned_at")),
            "created_by": creator}
    field = (ordering or "").lstrip("-")
    primary, desc = keys.get(field), (ordering or "").startswith("-")
    if primary is None:
        primary, desc = (lambda a: parse_datetime(a.data.get("last_calculated_at"))), True
    out = sorted(actions, key=lambda a: _nulls_last(text(a.data.get("name"))))
    out.sort(key=lambda a: _nulls_last(primary(a)), reverse=desc)
    return out


def flatten(value, prefix, out):
    """djangorestframework-csv's flattening: dotted keys, list indices as keys."""
    if isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            flatten(v, "%s.%s" % (prefix, k) if prefix else str(k), out)
    else:
        out[prefix] = value
    return out


def render_csv(rows):
    flat = [flatten(r, "", {}) for r in rows]
    if not flat:
        return b""
    header = sorted(set().union(*flat))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for row in flat:
        w.writerow([row.get(h) for h in header])
    return buf.getvalue().encode("utf-8")


# -------------------------------------------------------------------------- server state

FAULT_MODES = ("500", "502", "503", "504", "429", "reset", "stall", "garbage", "html",
               "truncated", "huge", "deep")
PROXY_PAGE = ("<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1>"
              "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
LOGIN_PAGE = (b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
              b"Sign in - Wi-Fi</title></head><body><h1>Welcome</h1><p>Please accept the "
              b"terms of use to continue.</p><form method=\"post\"><button>Accept</button>"
              b"</form></body></html>\n")
GARBAGE = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe{\"results\": [\x00\xc3\x28 not "
           b"json at all \xf0\x9f\x92 ]]}}\x1b[31m")
HUGE_SIZE = 64 * 1024 * 1024
DEEP_LEVELS = 100000


class FakePostHog:
    """Everything the handlers share. One lock guards the store, the log, the fault rules
    and the rate-limit windows."""

    def __init__(self, args, keys):
        self.args, self.keys = args, keys
        self.lock = threading.Lock()
        self.stall_release = threading.Event()
        self.inflight = 0
        self.reset()

    def reset(self):
        """Back to the state the command line describes."""
        a = self.args
        with self.lock:
            self.store = Store(a.projects, a.actions, a.seed)
            self.log = collections.deque(maxlen=LOG_LIMIT)
            self.seq = 0
            self.faults = []
            self.chaos_rng = random.Random("chaos-%s" % a.chaos_seed)
            self.latency_ms = a.latency_ms
            self.shape, self.page_size = a.list_shape, a.page_size
            self.per_minute, self.windows = a.rate_limit, {}
            self.current_project = (a.current_project if a.current_project is not None
                                    else next(iter(self.store.projects), None))
            self.release_stalls()

    def release_stalls(self):
        self.stall_release.set()
        self.stall_release = threading.Event()

    def next_seq(self):
        """Requests are numbered as they arrive (the log is read in that order,
        whenever each was answered)."""
        with self.lock:
            self.seq += 1
            return self.seq

    def record(self, entry):
        with self.lock:
            self.log.append(entry)

    def take_fault(self, method, path, chaos_ok=True):
        """The first rule matching the request, with one count consumed; else, in
        chaos mode, a 503 for a seeded random share of requests (not of those a
        test sends itself to check the server's state)."""
        with self.lock:
            for rule in self.faults:
                if (rule["method"] in (None, method)
                        and (rule["regex"] is None or rule["regex"].search(path))):
                    rule["count"] -= 1
                    if rule["count"] <= 0:
                        self.faults.remove(rule)
                    return dict(rule, release=self.stall_release)
            if chaos_ok and self.args.chaos and self.chaos_rng.random() < self.args.chaos:
                return {"mode": "503", "retry_after": 0, "chaos": True}
        return None

    def throttle(self, key_index):
        """DRF's SimpleRateThrottle: a sliding window of request times per key. Returns
        the wait in seconds when over budget (that request is not counted)."""
        with self.lock:
            if not self.per_minute:
                return None
            now = time.monotonic()
            window = self.windows.setdefault(key_index, collections.deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.per_minute:
                return 60 - (now - window[0])
            window.append(now)
            return None


def load_keys(args):
    if args.keys_file:
        with open(args.keys_file, encoding="utf-8") as f:
            raw, origin = json.load(f), args.keys_file
    elif os.environ.get("FAKE_POSTHOG_KEYS"):
        raw, origin = json.loads(os.environ["FAKE_POSTHOG_KEYS"]), "$FAKE_POSTHOG_KEYS"
    else:
        raw, origin = [{"key": DEMO_KEY, "scopes": ["*"], "projects": None}], "built-in"
    if not isinstance(raw, list):
        raise ValueError("%s: expected a JSON list of keys" % origin)
    keys = {}
    for i, k in enumerate(raw):
        # Messages name the entry, never the key.
        if not isinstance(k, dict) or not isinstance(k.get("key"), str) or not k["key"]:
            raise ValueError("%s: entry %d has no \"key\" string" % (origin, i))
        scopes, projects = k.get("scopes", ["*"]), k.get("projects")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError("%s: entry %d: scopes must be a list of strings" % (origin, i))
        if projects is not None and not (isinstance(projects, list) and all(
                isinstance(p, int) for p in projects)):
            raise ValueError("%s: entry %d: projects must be null or a list of ids"
                             % (origin, i))
        keys[k["key"]] = {"index": i, "scopes": set(scopes),
                          "projects": None if projects is None else set(projects)}
    return keys


def require_scope(key, obj, write):
    """action:write also grants action:read; '*' grants everything."""
    need = "%s:%s" % (obj, "write" if write else "read")
    if not {"*", need, obj + ":write"} & key["scopes"]:
        raise denied("API key missing required scope '%s'" % need)


# ------------------------------------------------------------------------------- routing

ROUTES = [
    ("projects", re.compile(r"^/api/projects/?$")),
    ("project", re.compile(r"^/api/projects/(?P<pid>[^/.]+)/?$")),
    ("actions", re.compile(r"^/api/projects/(?P<pid>[^/.]+)/actions/?$")),
    ("action", re.compile(r"^/api/projects/(?P<pid>[^/.]+)/actions/(?P<aid>[^/.]+)/?$")),
    ("references", re.compile(
        r"^/api/projects/(?P<pid>[^/.]+)/actions/(?P<aid>[^/.]+)/references/?$")),
]
ALLOW = {"projects": "GET, HEAD, OPTIONS", "project": "GET, HEAD, OPTIONS",
         "actions": "GET, POST, HEAD, OPTIONS",
         "action": "GET, PUT, PATCH, DELETE, HEAD, OPTIONS",
         "references": "GET, HEAD, OPTIONS"}
ENV_RE = re.compile(r"^/api/environments/([^/]+)/(.+)$")
BEARER_RE = re.compile(r"^Bearer\s+(\S.+)$")
DIGITS = re.compile(r"[0-9]+")
KEY_IN_TEXT = re.compile(r"(personal_api_key=|Bearer\s+)[^&\s'\"]*")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-posthog/1"
    timeout = 600                        # idle keep-alive connections go away eventually

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        # Headers and body are separate writes: without this, Nagle and delayed ACKs add
        # 40 ms to every request on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_expect_100(self):
        # No "100 Continue" for an oversized upload: dispatch() answers 413 at once.
        try:
            if int(self.headers.get("Content-Length") or 0) > MAX_BODY:
                return True
        except ValueError:
            pass
        return super().handle_expect_100()

    def log_request(self, code="-", size="-"):
        pass                             # API requests go to /_control/log instead

    def log_message(self, fmt, *args):
        if self.server.state.args.verbose:       # error lines can quote a request line
            sys.stderr.write("fake-posthog: %s\n" % KEY_IN_TEXT.sub(r"\1REDACTED", fmt % args))

    def do_GET(self):
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    @property
    def state(self):
        return self.server.state

    # -- plumbing

    def send(self, status, body=b"", ctype=JSON_TYPE, headers=(), length=None):
        self.status = status
        # Logged before the client can see the answer: a test that reads the log
        # right after a call returns must find the request in it.
        self.log_entry(status)
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        if self.allow:                   # DRF sends Allow on every response of a view
            self.send_header("Allow", self.allow)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def log_entry(self, status):
        """Records this request in the log, once (faults that send nothing are
        recorded at the end, with status 0)."""
        entry = getattr(self, "entry", None)
        if entry is not None:
            self.entry = None
            entry["status"] = status
            self.state.record(entry)

    def send_json(self, status, obj, headers=()):
        self.send(status, obj if isinstance(obj, bytes) else dumps(obj), JSON_TYPE, headers)

    def read_body(self):
        """The request body, or None when it is over the 20 MB limit."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, size = [], 0
            while True:
                n = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass             # trailers
                    return b"".join(chunks)
                size += n
                if size > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(n))
                self.rfile.readline(16)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def dispatch(self):
        self.status, self.allow = None, None
        split = urlsplit(self.path)
        path, query = split.path, split.query
        try:
            raw = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return self.send_json(400, {"type": "invalid_request", "code": "parse_error",
                                        "detail": "Malformed request body.", "attr": None})
        if raw is None:
            self.close_connection = True     # the rest of the body was never read
        if path == "/_control" or path.startswith("/_control/"):
            return self.control(path, query, raw)

        body, jerr = parse_json(raw) if raw else (None, None)
        auth, key, source = self.identify(body, query)
        with self.state.lock:
            self.state.inflight += 1
            inflight = self.state.inflight
        entry = {"seq": self.state.next_seq(), "method": self.command, "path": path,
                 "query": KEY_IN_TEXT.sub(r"\1REDACTED", query),
                 "status": 0, "body": None, "raw_body": None, "auth": auth,
                 "key": key["index"] if key else None, "time": time.time(),
                 # API requests being handled when this one arrived, itself included
                 "inflight": inflight}
        self.entry = entry
        if raw:
            text = raw.decode("utf-8", "replace")
            if isinstance(body, dict) and isinstance(body.get("personal_api_key"), str):
                text = text.replace(body["personal_api_key"], "REDACTED")
                body = dict(body, personal_api_key="REDACTED")
            entry["raw_body"], entry["body"] = text, body
        try:
            if raw is None:
                raise ApiError(413, "invalid_request", "request_too_large", "Request body "
                               "exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
            if self.state.latency_ms:
                time.sleep(self.state.latency_ms / 1000.0)
            fault = self.state.take_fault(self.command, path,
                                          self.headers.get("X-Fake-No-Chaos") is None)
            if fault:
                if fault.get("chaos"):
                    entry["chaos"] = True
                self.inject(fault)
            else:
                self.api(path, query, raw, jerr, auth, key, source)
        except ApiError as e:
            self.send_json(e.status, e.body, e.headers)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        except Exception:                # a bug here must not take the server down
            if self.state.args.verbose:
                traceback.print_exc()
            if self.status is None:
                self.send_json(500, server_error().body)
            self.close_connection = True
        finally:
            with self.state.lock:
                self.state.inflight -= 1
            self.log_entry(self.status or 0)
            self.log_message("%s %s %s", self.command, path, entry["status"])

    def identify(self, body, query):
        """('ok'|'missing'|'invalid', key, source). As in PersonalAPIKeyAuthentication,
        only the first candidate counts: header, then JSON body, then query string."""
        m = BEARER_RE.match(self.headers.get("Authorization") or "")
        if m:
            cand, source = m.group(1), "request Authorization header"
        elif isinstance(body, dict) and isinstance(body.get("personal_api_key"), str):
            cand, source = body["personal_api_key"], "request body"
        else:
            cand = query_get(parse_qs(query), "personal_api_key")
            source = "request query string"
            if cand is None:
                return "missing", None, None
        key = self.state.keys.get(cand)
        return ("ok" if key else "invalid"), key, source

    def site(self):
        return "http://%s" % (self.headers.get("Host") or "%s:%s" % self.server.server_address[:2])

    # -- faults

    def inject(self, rule):
        mode, retry = rule["mode"], rule["retry_after"]
        if mode == "500":
            self.send_json(500, server_error().body)
        elif mode == "503":
            self.send_json(503, {"type": "server_error", "code": "database_unavailable",
                                 "detail": "We couldn't reach the database just now. Please "
                                 "try again in a moment.", "attr": None},
                           [("Retry-After", str(1 if retry is None else retry))])
        elif mode in ("502", "504"):
            title = {"502": "502 Bad Gateway", "504": "504 Gateway Time-out"}[mode]
            self.send(int(mode), PROXY_PAGE.format(title).encode(), "text/html")
        elif mode == "429":
            e = throttled(retry)
            self.send_json(429, e.body, e.headers)
        elif mode == "reset":
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            # rfile holds a reference to the socket: only closing both closes the fd,
            # now, as an RST (a shutdown() later would send a FIN first).
            self.connection.close()
            self.rfile.close()
        elif mode == "stall":
            self.close_connection = True
            self.stall(rule["stall_seconds"], rule["release"])
        elif mode == "garbage":
            self.send(200, GARBAGE)
        elif mode == "html":
            self.send(200, LOGIN_PAGE, "text/html; charset=utf-8")
        elif mode == "truncated":
            self.close_connection = True
            body = (b'{"count":3,"results":[{"id":1,"name":"Signed up","description":"",'
                    b'"tags":[],"post_to_slack":fal')
            self.send(200, body, length=len(body) + 4096)
        elif mode == "huge":
            self.stream_huge()
        elif mode == "deep":
            self.send(200, b'{"results":' + b"[" * DEEP_LEVELS + b"]" * DEEP_LEVELS + b"}")

    def stall(self, seconds, release):
        """Holds the connection unanswered until the time is up, the client goes away or
        the fault rules are cleared."""
        deadline = time.monotonic() + seconds
        while not release.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.2))
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return               # the client closed its end
            except (OSError, ValueError):
                return
            if readable:                 # pipelined bytes: wait instead of spinning
                release.wait(min(left, 0.2))

    def stream_huge(self):
        head, tail = b'{"results":[],"padding":"', b'"}'
        self.send(200, b"", length=HUGE_SIZE)
        if self.command == "HEAD":
            return
        self.wfile.write(head)
        left, chunk = HUGE_SIZE - len(head) - len(tail), b"x" * (1 << 20)
        while left > 0:
            self.wfile.write(chunk[:left])
            left -= len(chunk)
        self.wfile.write(tail)

    # -- the API

    def api(self, path, query, raw, jerr, auth, key, source):
        m = ENV_RE.match(path)
        if m:
            path = "/api/projects/%s/%s" % m.groups()
        for route, rx in ROUTES:
            m = rx.match(path)
            if m:
                break
        else:
            if path == "/api" or path.startswith("/api/"):
                raise not_found("Endpoint not found.")     # no auth check, like the server
            return self.send(404, b"<!DOCTYPE html><title>Not Found</title><h1>Not Found"
                             b"</h1>\n", "text/html")
        self.allow = ALLOW[route]
        params, method = m.groupdict(), self.command
        q = parse_qs(query, keep_blank_values=True)
        write = method not in ("GET", "HEAD", "OPTIONS")

        # Without a header the key is looked for in the body, so a bad body fails first.
        if auth == "missing" and raw:
            self.request_data(raw, jerr)
        if auth != "ok":
            www = [("WWW-Authenticate", 'Bearer resource_metadata="%s/.well-known/'
                    'oauth-protected-resource"' % self.site())]
            if auth == "missing":
                raise ApiError(401, "authentication_error", "not_authenticated",
                               "Authentication credentials were not provided.", None, www)
            raise ApiError(401, "authentication_error", "authentication_failed",
                           "Personal API key found in %s is invalid." % source, None, www)

        # Permissions: the key's project restriction, its scopes, then the project.
        st, project = self.state, None
        if route == "projects":
            if key["projects"] is not None:
                raise denied("API keys with scoped projects are only supported on "
                             "project-based endpoints.")
            require_scope(key, "project", write)
        else:
            pid = params["pid"]
            pid = (st.current_project if pid == "@current"
                   else int(pid) if DIGITS.fullmatch(pid) else None)
            if pid is None:
                raise not_found("Project not found.")
            if key["projects"] is not None and pid not in key["projects"]:
                raise denied("API key does not have access to the requested project: "
                             "ID %s." % pid)
            require_scope(key, "project" if route == "project" else "action", write)
            with st.lock:
                project = st.store.projects.get(pid)
            if project is None:
                raise not_found("Project not found.")
        wait = st.throttle(key["index"])
        if wait is not None:
            raise throttled(wait)

        get = method in ("GET", "HEAD")
        if method == "OPTIONS":
            return self.send_json(200, {"name": route.capitalize(), "description": "",
                                        "renders": [JSON_TYPE, "text/csv"],
                                        "parses": [JSON_TYPE]})
        if route == "action" and method == "DELETE":
            # ForbidDestroyModel returns a bare Response: no body, no Content-Type,
            # and the id is never looked up.
            return self.send(405, b"", None)
        if route == "projects" and get:
            return self.list_projects(q)
        if route == "project" and get:
            return self.send_json(200, project.info)
        if route == "actions" and get:
            return self.list_actions(project, q)
        if route == "actions" and method == "POST":
            return self.save_action(project, None, raw, jerr)
        if get or (route == "action" and method in ("PATCH", "PUT")):
            with st.lock:
                action = (project.actions.get(int(params["aid"]))
                          if DIGITS.fullmatch(params["aid"]) else None)
                blob = action.blob() if action else None
            if action is None:
                raise not_found()
            if route == "references":
                return self.send_json(200, b"[]")
            if get:
                return self.send_json(200, blob)
            return self.save_action(project, action, raw, jerr)
        raise ApiError(405, "invalid_request", "method_not_allowed",
                       'Method "%s" not allowed.' % method)

    def absolute_url(self):
        return self.site() + self.path

    def wants_csv(self, q):
        fmt = query_get(q, "format")
        if fmt is not None:
            return fmt == "csv"
        return self.headers.get("Accept", "").split(",")[0].split(";")[0].strip() == "text/csv"

    def list_projects(self, q):
        with self.state.lock:
            projects = [p.info for p in self.state.store.projects.values()]
        search = (query_get(q, "search") or "").lower()
        projects = [p for p in projects if search in p["name"].lower()]
        offset, limit, nxt, prev = limit_offset(q, self.absolute_url(), len(projects), 100)
        page = projects[offset:offset + limit]
        if self.wants_csv(q):
            return self.send(200, render_csv(page), "text/csv; charset=utf-8")
        self.send_json(200, {"count": len(projects), "next": nxt, "previous": prev,
                             "results": page})

    def list_actions(self, project, q):
        """`all`: {results} with everything; `count`: {count, results} honouring limit,
        offset, search and ordering; `paged`: DRF's {count, next, previous, results}."""
        st = self.state
        with st.lock:
            shape, live, head = st.shape, project.live(), {}
            if shape == "all":
                items = order_actions(live, None)
            else:
                search = (query_get(q, "search") or "").lower()
                if search:
                    live = [a for a in live if isinstance(a.data.get("name"), str)
                            and search in a.data["name"].lower()]
                items = order_actions(live, query_get(q, "ordering"))
                head["count"] = len(items)
                if shape == "count":
                    offset = positive_int(query_get(q, "offset"), default=0)
                    limit = positive_int(query_get(q, "limit"))
                    items = items[offset:None if limit is None else offset + limit]
                else:
                    offset, limit, head["next"], head["previous"] = limit_offset(
                        q, self.absolute_url(), len(items), st.page_size)
                    items = items[offset:offset + limit]
            if self.wants_csv(q):
                rows, blobs = [a.data for a in items], None
            else:
                blobs = [a.blob() for a in items]
        if blobs is None:
            return self.send(200, render_csv(rows), "text/csv; charset=utf-8")
        if query_get(q, "include_reference_count") in ("1", "true", "True"):
            blobs = [b[:-1] + b',"reference_count":0}' for b in blobs]
        prefix = dumps(head)[:-1] + (b"," if head else b"")
        self.send_json(200, prefix + b'"results":[' + b",".join(blobs) + b"]}")

    def request_data(self, raw, jerr):
        """The body as DRF's parsers hand it over."""
        ctype = self.headers.get("Content-Type")
        if not raw or ctype is None:
            return {}                    # DRF ignores a body that has no type
        media = ctype.split(";")[0].strip().lower()
        if media != JSON_TYPE and not media.endswith("+json"):
            raise ApiError(415, "invalid_request", "unsupported_media_type",
                           'Unsupported media type "%s" in request.' % ctype)
        if jerr:
            raise ApiError(400, "invalid_request", "parse_error", jerr)
        return json.loads(raw.decode("utf-8"))

    def save_action(self, project, action, raw, jerr):
        """POST (action None) or PATCH/PUT: no field is required, so PUT is a PATCH."""
        payload = self.request_data(raw, jerr)
        st = self.state
        with st.lock:
            v = validate_action(payload, project.live(), action and action.id)
            creating = action is None
            if creating:
                aid, st.store.next_id = st.store.next_id, st.store.next_id + 1
                action = Action(aid, new_action_data(aid, project.id, now_str(), API_USER))
                project.actions[aid] = action
            apply_fields(action.data, v, creating)
            action.changed()
            body = action.blob()
        self.send_json(201 if creating else 200, body)

    # -- control

    def control(self, path, query, raw):
        name, method = path[len("/_control"):].strip("/"), self.command
        try:
            if raw is None:
                raise ValueError("body too large")
            body, err = parse_json(raw) if raw else ({}, None)
            if err or not isinstance(body, dict):
                raise ValueError(err or "expected a JSON object")
            handler = CONTROLS.get((method, name))
            if handler is None:
                return self.send_json(404, {"error": "no control %s /_control/%s; known: %s"
                                            % (method, name, ", ".join(
                                                "%s /_control/%s" % k for k in CONTROLS))})
            out = handler(self.state, body, parse_qs(query))
            if isinstance(out, tuple):
                return self.send_json(*out)
            self.send_json(200, out)
        except (ValueError, TypeError, KeyError, re.error) as e:
            self.send_json(400, {"error": "%s: %s" % (type(e).__name__, e)})
        except ConnectionError:
            self.close_connection = True


# ------------------------------------------------------------------------ control routes


def c_log(st, body, q):
    since = int(query_get(q, "since") or 0)
    with st.lock:
        entries = [e for e in st.log if e["seq"] > since]
    return {"requests": sorted(entries, key=lambda e: e["seq"])}


def c_log_clear(st, body, q):
    with st.lock:
        st.log.clear()
    return {"ok": True}


def c_latency(st, body, q):
    ms = body.get("ms", 0)
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or ms < 0:
        raise ValueError("ms must be a number >= 0")
    st.latency_ms = ms
    return {"ok": True, "ms": ms}


def c_fail(st, body, q):
    mode = str(body.get("mode", "500"))
    if mode not in FAULT_MODES:
        raise ValueError("mode must be one of %s" % ", ".join(FAULT_MODES))
    retry = body.get("retry_after")
    rule = {"count": int(body.get("count", 1)), "mode": mode,
            "method": (body.get("method") or "").upper() or None, "path": body.get("path"),
            "regex": re.compile(body["path"]) if body.get("path") else None,
            "retry_after": None if retry is None else int(retry),
            "stall_seconds": float(body.get("stall_seconds", 60))}
    with st.lock:
        if rule["count"] > 0:
            st.faults.append(rule)
        return {"ok": True, "rules": [{k: v for k, v in r.items() if k != "regex"}
                                      for r in st.faults]}


def c_fail_clear(st, body, q):
    with st.lock:
        st.faults = []
        st.release_stalls()
    return {"ok": True}


def c_list_shape(st, body, q):
    shape = body.get("shape")
    if shape not in ("all", "count", "paged"):
        raise ValueError("shape must be all, count or paged")
    size = int(body.get("page_size") or st.page_size)
    if size < 1:
        raise ValueError("page_size must be >= 1")
    with st.lock:
        st.shape, st.page_size = shape, size
    return {"ok": True, "shape": shape, "page_size": size}


def c_action(st, body, q):
    """Changes or creates an action raw: no validation, no normalisation."""
    fields = body.get("set") or {}
    if not isinstance(fields, dict):
        raise ValueError("\"set\" must be an object")
    pid, aid = body.get("project"), body.get("id")
    with st.lock:
        pid = st.current_project if pid == "@current" else pid
        project = st.store.projects.get(pid)
        if pid is not None and project is None:
            return 404, {"error": "no project %r" % (pid,)}
        if aid is None:
            if project is None:
                raise ValueError("a new action needs \"project\"")
            aid, st.store.next_id = st.store.next_id, st.store.next_id + 1
            action = Action(aid, new_action_data(aid, project.id, now_str(), API_USER))
            action.data.update((k, v) for k, v in fields.items() if k != "id")
            project.actions[aid] = action
        else:
            action = project.actions.get(aid) if project else st.store.find_action(aid)
            if action is None:
                return 404, {"error": "no action %r" % (aid,)}
            action.data.update(fields)
            action.changed()
        return action.blob()


def c_state(st, body, q):
    with st.lock:
        return b'{"projects":[' + b",".join(
            dumps({"id": p.id, "name": p.name})[:-1] + b',"actions":[' +
            b",".join(a.blob() for a in p.actions.values()) + b"]}"
            for p in st.store.projects.values()) + b"]}"


def c_reset(st, body, q):
    st.reset()
    return {"ok": True}


def c_rate_limit(st, body, q):
    n = int(body.get("per_minute", 0))
    if n < 0:
        raise ValueError("per_minute must be >= 0")
    with st.lock:
        st.per_minute, st.windows = n, {}
    return {"ok": True, "per_minute": n}


def c_current_project(st, body, q):
    with st.lock:
        st.current_project = body.get("id")
    return {"ok": True, "id": body.get("id")}


CONTROLS = {
    ("GET", "log"): c_log,
    ("POST", "log/clear"): c_log_clear,
    ("POST", "latency"): c_latency,
    ("POST", "fail"): c_fail,
    ("POST", "fail/clear"): c_fail_clear,
    ("POST", "list_shape"): c_list_shape,
    ("POST", "action"): c_action,
    ("GET", "state"): c_state,
    ("POST", "reset"): c_reset,
    ("POST", "rate_limit"): c_rate_limit,
    ("POST", "current_project"): c_current_project,
}


# ---------------------------------------------------------------------------------- main


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        if self.state.args.verbose and not isinstance(sys.exc_info()[1], OSError):
            traceback.print_exc()        # clients hanging up is normal, and quiet


def write_port_file(path, port):
    fd, tmp = tempfile.mkstemp(prefix=".port-", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)                # readers never see a partial number


def parse_args(argv):
    ap = argparse.ArgumentParser(description="A fake PostHog actions API for phfs's tests "
                                 "and demo. Control API under /_control/ (see the source).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0: any free port (see --port-file)")
    ap.add_argument("--port-file", help="write the bound port here once ready")
    ap.add_argument("--projects", type=int, default=3)
    ap.add_argument("--actions", type=int, default=20,
                    help="live actions per project (plus %d soft-deleted)" % DELETED_PER_PROJECT)
    ap.add_argument("--seed", default="1")
    ap.add_argument("--list-shape", choices=("all", "count", "paged"), default="count")
    ap.add_argument("--page-size", type=int, default=100, help="page of the 'paged' shape")
    ap.add_argument("--keys-file", help="JSON list of {key, scopes, projects}")
    ap.add_argument("--current-project", type=int,
                    help="what @current means (default: the first project)")
    ap.add_argument("--rate-limit", type=int, default=0,
                    help="requests per minute per key; 0: no limit")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--quiet", action="store_true", help="no request logging (the default)")
    ap.add_argument("--verbose", action="store_true",
                    help="log each request (method, path, status) to stderr")
    ap.add_argument("--chaos", type=float,
                    default=float(os.environ.get("FAKE_POSTHOG_CHAOS") or 0),
                    help="answer this share of API requests with 503, at random "
                    "(default: $FAKE_POSTHOG_CHAOS or 0); logged with \"chaos\": true")
    ap.add_argument("--chaos-seed", default=os.environ.get("FAKE_POSTHOG_CHAOS_SEED", "1"),
                    help="seed of the chaos choices, for a reproducible run")
    args = ap.parse_args(argv)
    args.verbose = args.verbose and not args.quiet
    if args.projects < 0 or args.actions < 0 or args.page_size < 1 or args.rate_limit < 0:
        ap.error("--projects, --actions and --rate-limit must be >= 0, --page-size >= 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        keys = load_keys(args)
    except (OSError, ValueError) as e:
        sys.exit("fake_posthog: keys: %s" % e)
    httpd = Server((args.host, args.port), Handler)
    httpd.state = FakePostHog(args, keys)
    host, port = httpd.server_address[:2]
    if args.port_file:
        write_port_file(args.port_file, port)
    print("fake PostHog listening on http://%s:%d" % (host, port), flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
