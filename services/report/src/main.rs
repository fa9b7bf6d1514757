//! `netmeter`: the command for people (`netmeter report ...`); see [`netmeter_report::cli`].

fn main() -> std::process::ExitCode {
    netmeter_report::cli::main()
}
