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

{{/* The namespaces of the kube runners, as a JSON list. */}}
{{- define "runyard.kubeNamespaces" -}}
{{- $nss := list -}}
{{- range .Values.runners -}}
{{- if eq (toString .kind) "kube" -}}
{{- $nss = append $nss (default $.Release.Namespace .namespace) -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $nss) -}}
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
{{- range $i, $r := .Values.runners -}}
{{- if not $r.kind -}}
{{- fail (printf "runyard: runners[%d] needs a kind" $i) -}}
{{- end -}}
{{- if not $r.types -}}
{{- fail (printf "runyard: runners[%d] needs types" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}
