//! The one way every long-running command learns it should stop: SIGTERM (an orchestrator,
//! `docker stop`, `kill`) or SIGINT (Ctrl-C), both meaning "finish what is in flight, then exit 0".

/// Resolves on the first SIGTERM or SIGINT. Installing the handlers is what replaces the default
/// action (death mid-request, or nothing at all as PID 1 in a container), so call it early: a
/// signal that arrives before the first poll is still seen once the handlers exist.
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => tracing::info!("SIGTERM received; draining"),
                    _ = interrupt.recv() => tracing::info!("SIGINT received; draining"),
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "signal handlers not installed; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
