// ptq: post-training quantization from the command line. `ptq --help` lists the commands.

using System.CommandLine;

using Quantization.Cli;

using Spectre.Console;

// Piped output is read by programs: no wrapping of long tensor names.
if (Console.IsOutputRedirected)
{
    AnsiConsole.Profile.Width = 1000;
}

RootCommand root = new("ptq: post-training quantization of ONNX models and safetensors checkpoints.")
{
    QuantizeCommand.Create(),
    InspectCommand.Create(),
    ReportCommand.Create(),
};
root.Options.Add(CliRunner.Verbose);
ParseResult parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    foreach (System.CommandLine.Parsing.ParseError error in parse.Errors)
    {
        Console.Error.WriteLine($"error: {error.Message}");
    }

    Console.Error.WriteLine("Run 'ptq --help' for usage.");
    return ExitCodes.Usage;
}

return await parse.InvokeAsync();
