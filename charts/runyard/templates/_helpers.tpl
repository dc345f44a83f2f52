{{/* The chart's name. */}}
{{- define "runyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name of the release's objects (at most 56 characters: "-worker" fits after it). */}}
{{- define "runyard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 56 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "runyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "runyard.labels" -}}
helm.sh/chart: {{ include "runyard.chart" . }}
{{ include "runyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "runyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "runyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "runyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "runyard.secretName" -}}
{{- default (include "runyard.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "runyard.publicUrl" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "runyard.fullname" .) .Release.Namespace .Values.service.port) .Values.publicUrl | trimSuffix "/" -}}
{{- end -}}

{{- define "runyard.useRedis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret -}}true{{- end -}}
{{- end -}}

{{/* The namespace of the Jobs of kube runners that name none: never the release's own. */}}
{{- define "runyard.jobsNamespace" -}}
{{- default (printf "%s-jobs" (default "default" .Release.Namespace)) .Values.jobs.namespace | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The namespaces of the kube runners, as a JSON list. */}}
{{- define "runyard.kubeNamespaces" -}}
{{- $nss := list -}}
{{- range .Values.runners -}}
{{- if eq (toString .kind) "kube" -}}
{{- $nss = append $nss (default (include "runyard.jobsNamespace" $) .namespace) -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $nss) -}}
{{- end -}}

{{/* Seconds of a runyard duration written as <n>s, <n>m or <n>h (0 for other forms, which the
chart then cannot check). */}}
{{- define "runyard.seconds" -}}
{{- $d := toString . | trim -}}
{{- if regexMatch "^[0-9]+s$" $d -}}{{- trimSuffix "s" $d | int -}}
{{- else if regexMatch "^[0-9]+m$" $d -}}{{- mul (trimSuffix "m" $d | int) 60 -}}
{{- else if regexMatch "^[0-9]+h$" $d -}}{{- mul (trimSuffix "h" $d | int) 3600 -}}
{{- else -}}0{{- end -}}
{{- end -}}

{{/* runyard's shutdown window in seconds: worker.shutdown_grace + worker.kill_grace (30 s and 5 s
unless set in `config.worker`). */}}
{{- define "runyard.shutdownWindow" -}}
{{- $w := .Values.config.worker | default dict -}}
{{- $g := include "runyard.seconds" (default "30s" $w.shutdown_grace) | int -}}
{{- $k := include "runyard.seconds" (default "5s" $w.kill_grace) | int -}}
{{- add $g $k -}}
{{- end -}}

{{/* A value as TOML: strings, booleans, numbers, lists and (inline) tables. */}}
{{- define "runyard.toml" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- if eq (float64 $v) (floor $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v -}}{{- if $i -}}, {{ end -}}{{- include "runyard.toml" $e -}}{{- end -}}]
{{- else if kindIs "map" $v -}}
{ {{- range $i, $k := keys $v | sortAlpha -}}{{- if $i -}},{{- end }} {{ toJson $k }} = {{ include "runyard.toml" (get $v $k) -}}{{- end }} }
{{- else -}}
{{- fail (printf "runyard: cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* Checks of the values that templates cannot express otherwise. */}}
{{- define "runyard.checks" -}}
{{- if and .Values.worker.enabled (not (include "runyard.useRedis" .)) -}}
{{- fail "runyard: worker.enabled needs Redis (redis.url or redis.existingSecret): the embedded store belongs to one process" -}}
{{- end -}}
{{- if and (gt (int .Values.server.replicas) 1) (not (include "runyard.useRedis" .)) -}}
{{- fail "runyard: server.replicas > 1 needs Redis (redis.url or redis.existingSecret)" -}}
{{- end -}}
{{- if not (or .Values.secrets.existingSecret .Values.secrets.masterKey) -}}
{{- fail "runyard: set secrets.masterKey (e.g. --set secrets.masterKey=$(openssl rand -hex 32)) or secrets.existingSecret; the chart never generates it, since a generated key changes with every render and orphans running jobs" -}}
{{- end -}}
{{- if and .Values.secrets.masterKey (lt (len .Values.secrets.masterKey) 32) -}}
{{- fail "runyard: secrets.masterKey must be at least 32 characters" -}}
{{- end -}}
{{- if and .Values.auth.enabled (not (or .Values.secrets.existingSecret .Values.secrets.jwtSecret)) -}}
{{- fail "runyard: auth.enabled needs secrets.jwtSecret (e.g. --set secrets.jwtSecret=$(openssl rand -hex 32)) or secrets.existingSecret with a jwt-secret key; or set auth.enabled=false to run without authentication" -}}
{{- end -}}
{{- if and .Values.secrets.jwtSecret (lt (len .Values.secrets.jwtSecret) 32) -}}
{{- fail "runyard: secrets.jwtSecret must be at least 32 characters" -}}
{{- end -}}
{{- $metricsOpen := false -}}
{{- $cfgAuth := (.Values.config | default dict).auth -}}
{{- if kindIs "map" $cfgAuth -}}
{{- $v := get $cfgAuth "metrics_require_token" -}}
{{- $metricsOpen = and (kindIs "bool" $v) (not $v) -}}
{{- end -}}
{{- /* RUNYARD_AUTH__METRICS_REQUIRE_TOKEN in server.extraEnv overrides the file, as in the server: only the value "false" opens /metrics; the server reads the name in any case and trims the value. */ -}}
{{- range $e := (.Values.server.extraEnv | default list) -}}
{{- if eq (upper (toString (get $e "name"))) "RUNYARD_AUTH__METRICS_REQUIRE_TOKEN" -}}
{{- $metricsOpen = eq (trim (toString (get $e "value"))) "false" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled .Values.auth.enabled (not .Values.serviceMonitor.bearerTokenSecret) (not $metricsOpen) -}}
{{- fail "runyard: serviceMonitor.enabled with auth.enabled needs serviceMonitor.bearerTokenSecret (a Secret with a runyard token that has jobs:read and no types or channels): with auth, /metrics answers 401 without one; or set config.auth.metrics_require_token=false to serve /metrics to anyone" -}}
{{- end -}}
{{- $window := include "runyard.shutdownWindow" . | int -}}
{{- range $c := list "server" "worker" -}}
{{- $grace := (get $.Values $c).terminationGracePeriodSeconds | int -}}
{{- if le $grace $window -}}
{{- fail (printf "runyard: %s.terminationGracePeriodSeconds (%d) must be longer than runyard's shutdown window, worker.shutdown_grace + worker.kill_grace (%d s)" $c $grace $window) -}}
{{- end -}}
{{- end -}}
{{- if and (eq (include "runyard.jobsNamespace" .) .Release.Namespace) -}}
{{- fail "runyard: jobs.namespace must not be the release namespace: a Job there could mount runyard's own Secret" -}}
{{- end -}}
{{- range $i, $r := .Values.runners -}}
{{- if and (eq (toString $r.kind) "kube") (eq (toString $r.namespace) $.Release.Namespace) -}}
{{- fail (printf "runyard: runners[%d].namespace is the release namespace, where runyard's Secret is; give kube runners a namespace of their own" $i) -}}
{{- end -}}
{{- if not $r.kind -}}
{{- fail (printf "runyard: runners[%d] needs a kind" $i) -}}
{{- end -}}
{{- if not $r.types -}}
{{- fail (printf "runyard: runners[%d] needs types" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
