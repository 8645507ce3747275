pub fn run(_: &std::path::Path, _: usize) -> anyhow::Result<()> {
    anyhow::bail!("demo: todo")
}
