# The awslogs group of the task definitions, and autoscaling: workers on backlog per task
# (metric math over SQS and Container Insights), the ingress on CPU.

resource "aws_cloudwatch_log_group" "tasks" {
  name              = "/ecs/${var.name_prefix}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_appautoscaling_target" "worker" {
  for_each = var.worker_service_names

  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${each.value}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.worker_min_tasks
  max_capacity       = var.worker_max_tasks
  tags               = var.tags
}

# Backlog per task = (visible + in-flight messages of the domain queue) / running tasks.
# Target tracking keeps it near target_backlog_per_task: queue depth alone would not say
# whether the tasks already running can absorb it.
resource "aws_appautoscaling_policy" "worker_backlog" {
  for_each = var.worker_service_names

  name               = "${var.name_prefix}-${each.key}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.worker[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.worker[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value = var.target_backlog_per_task
    # Out fast, in slowly: a task that leaves drains for up to 20 s and its released
    # messages wait out their visibility timeout.
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    customized_metric_specification {
      metrics {
        id          = "visible"
        return_data = false

        metric_stat {
          stat = "Sum"

          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"

            dimensions {
              name  = "QueueName"
              value = "${var.name_prefix}-${each.key}-events"
            }
          }
        }
      }

      metrics {
        id          = "inflight"
        return_data = false

        metric_stat {
          stat = "Sum"

          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesNotVisible"

            dimensions {
              name  = "QueueName"
              value = "${var.name_prefix}-${each.key}-events"
            }
          }
        }
      }

      metrics {
        id          = "tasks"
        return_data = false

        metric_stat {
          stat = "Average"

          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"

            dimensions {
              name  = "ClusterName"
              value = var.cluster_name
            }

            dimensions {
              name  = "ServiceName"
              value = each.value
            }
          }
        }
      }

      metrics {
        id          = "backlog_per_task"
        label       = "${each.key} messages per running task"
        expression  = "(visible + inflight) / tasks"
        return_data = true
      }
    }
  }
}

resource "aws_appautoscaling_target" "ingress" {
  count = var.ingress_service_name == null ? 0 : 1

  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${var.ingress_service_name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.ingress_min_tasks
  max_capacity       = var.ingress_max_tasks
  tags               = var.tags
}

resource "aws_appautoscaling_policy" "ingress_cpu" {
  count = var.ingress_service_name == null ? 0 : 1

  name               = "${var.name_prefix}-ingress-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.ingress[0].service_namespace
  resource_id        = aws_appautoscaling_target.ingress[0].resource_id
  scalable_dimension = aws_appautoscaling_target.ingress[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.ingress_target_cpu_percent
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
