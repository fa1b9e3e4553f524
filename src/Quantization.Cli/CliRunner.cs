using System.CommandLine;

using Microsoft.ML.OnnxRuntime;

namespace Quantization.Cli;

/// <summary>The process exit codes of <c>ptq</c>.</summary>
internal static class ExitCodes
{
    /// <summary>Done.</summary>
    public const int Success = 0;

    /// <summary>The input is invalid: a malformed file, NaN or infinity in a tensor, a bad value.</summary>
    public const int InvalidInput = 1;

    /// <summary>The command line is wrong.</summary>
    public const int Usage = 2;

    /// <summary>A file could not be read or written.</summary>
    public const int IOError = 3;

    /// <summary>The input uses something not supported (an operator, a scheme, an old opset).</summary>
    public const int NotSupported = 4;

    /// <summary>ONNX Runtime failed on the model or the calibration data.</summary>
    public const int RuntimeError = 5;

    /// <summary>Cancelled (Ctrl+C).</summary>
    public const int Cancelled = 130;
}

/// <summary>Runs a command's action: errors become one line on standard error and an exit code; <c>--verbose</c> adds the stack trace.</summary>
internal static class CliRunner
{
    /// <summary>Gets the option that shows stack traces of errors.</summary>
    public static Option<bool> Verbose { get; } = new("--verbose") { Description = "Show the full exception on errors.", Recursive = true };

    /// <summary>Wraps an action with the error handling.</summary>
    public static Func<ParseResult, CancellationToken, Task<int>> Wrap(Func<ParseResult, CancellationToken, Task> action) => async (parse, cancellationToken) =>
    {
        try
        {
            await action(parse, cancellationToken).ConfigureAwait(false);
            return ExitCodes.Success;
        }
        catch (Exception e) when (Code(e) is int code)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            if (parse.GetValue(Verbose))
            {
                Console.Error.WriteLine(e);
            }

            return code;
        }
    };

    private static int? Code(Exception e) => e switch
    {
        OperationCanceledException => ExitCodes.Cancelled,
        InvalidDataException or NonFiniteValueException or ArgumentException or FormatException => ExitCodes.InvalidInput,
        NotSupportedException => ExitCodes.NotSupported,
        OnnxRuntimeException => ExitCodes.RuntimeError,
        IOException or UnauthorizedAccessException => ExitCodes.IOError,
        InvalidOperationException => ExitCodes.InvalidInput,
        _ => null,
    };
}
