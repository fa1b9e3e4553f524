using System.CommandLine;
using System.Diagnostics;
using System.Globalization;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

using Quantization.Onnx;

using Spectre.Console;

namespace Quantization.Cli;

/// <summary><c>ptq quantize</c>: an ONNX model (by its <c>.onnx</c> extension) or a safetensors checkpoint.</summary>
internal static class QuantizeCommand
{
    public static Command Create()
    {
        Argument<string> input = new("input") { Description = "An .onnx model, or a .safetensors file, index .json or checkpoint directory." };
        Option<string> output = new("--output", "-o") { Description = "The quantized .onnx file, or the directory of the quantized checkpoint.", Required = true };
        Option<string> mode = new("--mode") { Description = "ONNX only: weight-only (W8A16), static (W8A8, needs --calibration-data) or dynamic (W8A8, MatMul and Gemm, activations quantized at run time; no calibration data).", DefaultValueFactory = _ => "weight-only" };
        mode.AcceptOnlyFromAmong("weight-only", "static", "dynamic");
        Option<string> format = new("--format") { Description = "ONNX weight-only: store MatMul and Gemm weights as qdq (int8 + DequantizeLinear) or matmulnbits (ONNX Runtime's MatMulNBits, 8-bit blocks of 32 along K, activations quantized per block at run time: accuracy_level 4).", DefaultValueFactory = _ => "qdq" };
        format.AcceptOnlyFromAmong("qdq", "matmulnbits");
        Option<string> granularity = new("--granularity") { Description = "One scale per output channel, per group of inputs (safetensors only) or per tensor.", DefaultValueFactory = _ => "channel" };
        granularity.AcceptOnlyFromAmong("channel", "group", "tensor");
        Option<int> groupSize = new("--group-size") { Description = "Inputs per group with --granularity group.", DefaultValueFactory = _ => 128 };
        Option<bool> asymmetric = new("--asymmetric") { Description = "Asymmetric weights (a zero point per scale); symmetric by default." };
        Option<string> convention = new("--convention") { Description = "Whose arithmetic computes the parameters.", DefaultValueFactory = _ => "onnx" };
        convention.AcceptOnlyFromAmong("onnx", "torch", "ggml", "golden-stick");
        Option<string[]> include = new("--include") { Description = "Only tensors (safetensors) or nodes (ONNX) matching this glob, or re:regex; repeatable." };
        Option<string[]> exclude = new("--exclude") { Description = "Keep tensors or nodes matching this glob or re:regex in float; repeatable. Safetensors always keeps *embed*, *norm* and *lm_head* too." };
        Option<string> calibration = new("--calibration-data") { Description = "ONNX only: a directory of .npy files, one input batch each, for static ranges and bias correction." };
        Option<bool> gptq = new("--gptq") { Description = "ONNX weight-only with calibration data: round MatMul and Gemm weights with GPTQ." };
        Option<bool> stats = new("--stats") { Description = "Print time, throughput and peak memory." };
        Command command = new("quantize", "Quantize a model or checkpoint to int8.")
        {
            input, output, mode, format, granularity, groupSize, asymmetric, convention, include, exclude, calibration, gptq, stats,
        };
        command.SetAction(CliRunner.Wrap(async (parse, cancellationToken) =>
        {
            string source = parse.GetValue(input)!;
            QuantizationGranularity grain = parse.GetValue(granularity) switch
            {
                "group" => QuantizationGranularity.PerGroup(parse.GetValue(groupSize)),
                "tensor" => QuantizationGranularity.PerTensor,
                _ => QuantizationGranularity.PerChannel(0),
            };
            NumericConvention arithmetic = parse.GetValue(convention) switch
            {
                "torch" => NumericConvention.Torch,
                "ggml" => NumericConvention.GgmlQ8_0,
                "golden-stick" => NumericConvention.GoldenStick,
                _ => NumericConvention.Onnx,
            };
            QuantizationScheme scheme = new(QuantizedType.Int8, symmetric: !parse.GetValue(asymmetric), grain, arithmetic);
            NamePattern[] includes = [.. (parse.GetValue(include) ?? []).Select(p => new NamePattern(p))];
            NamePattern[] excludes = [.. (parse.GetValue(exclude) ?? []).Select(p => new NamePattern(p))];
            long started = Stopwatch.GetTimestamp();
            bool onnx = source.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);
            bool matMulNBits = parse.GetValue(format) == "matmulnbits";
            if (matMulNBits && (!onnx || parse.GetValue(mode) != "weight-only"))
            {
                throw new ArgumentException("--format matmulnbits applies to ONNX models with --mode weight-only.");
            }

            long bytes = onnx
                ? await QuantizeOnnxAsync(source, parse.GetValue(output)!, parse.GetValue(mode)!, matMulNBits, scheme, includes, excludes, parse.GetValue(calibration), parse.GetValue(gptq), cancellationToken).ConfigureAwait(false)
                : QuantizeCheckpoint(source, parse.GetValue(output)!, scheme, includes, excludes, cancellationToken);
            if (parse.GetValue(stats))
            {
                double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"stats: {bytes / 1e9:F3} GB in {seconds:F2} s ({bytes / 1e9 / seconds:F2} GB/s), peak resident memory {PeakResidentBytes() / 1e6:F0} MB"));
            }
        }));
        return command;
    }

    private static async Task<long> QuantizeOnnxAsync(string source, string target, string mode, bool matMulNBits, QuantizationScheme scheme, NamePattern[] includes, NamePattern[] excludes, string? calibrationDirectory, bool gptq, CancellationToken cancellationToken)
    {
        if (mode == "dynamic" && calibrationDirectory is not null)
        {
            throw new ArgumentException("--mode dynamic quantizes activations at run time and takes no --calibration-data.");
        }

        if (mode == "dynamic" && gptq)
        {
            throw new ArgumentException("--gptq applies to --mode weight-only with --calibration-data; --mode dynamic rounds weights to nearest.");
        }

        OnnxModel model = OnnxModel.Load(source);
        long opset = model.Opset;
        OnnxOpsetUpgrader.Upgrade(model);
        if (opset < model.Opset)
        {
            Console.WriteLine($"Upgraded the model from opset {opset} to {model.Opset} (per-channel DequantizeLinear needs 13).");
        }

        int folded = OnnxPreprocessor.FoldBatchNormalization(model);
        if (folded > 0)
        {
            Console.WriteLine($"Folded {folded} BatchNormalization nodes into their Conv.");
        }

        OnnxWeightQuantizationOptions options = mode switch
        {
            "static" => new OnnxStaticQuantizationOptions(),
            "dynamic" => new OnnxDynamicQuantizationOptions(),
            _ => new OnnxWeightQuantizationOptions { MatMulNBits = matMulNBits ? new MatMulNBitsOptions() : null },
        };
        options.Scheme = scheme;
        options.Gptq = gptq ? new GptqOptions() : null;
        foreach (NamePattern pattern in includes)
        {
            options.IncludeNodes.Add(pattern);
        }

        foreach (NamePattern pattern in excludes)
        {
            options.ExcludeNodes.Add(pattern);
        }

        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>>? feeds = calibrationDirectory is null ? null : Feeds(model, calibrationDirectory);
        IReadOnlyList<OnnxWeightReport> weights;
        if (options is OnnxStaticQuantizationOptions staticOptions)
        {
            OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, feeds ?? throw new ArgumentException("--mode static needs --calibration-data: a directory of .npy input batches."), staticOptions, cancellationToken: cancellationToken).ConfigureAwait(false);
            weights = result.Weights;
            Console.WriteLine($"Static W8A8: {result.Activations.Count} activations, {result.Biases.Count} int32 biases.");
        }
        else if (options is OnnxDynamicQuantizationOptions dynamicOptions)
        {
            OnnxDynamicQuantizationResult result = OnnxDynamicQuantizer.Quantize(model, dynamicOptions);
            weights = result.Weights;
            Console.WriteLine($"Dynamic W8A8: {result.Weights.Count} weights, {result.Activations.Count} activations quantized at run time.");
        }
        else
        {
            weights = feeds is null ? OnnxWeightQuantizer.Quantize(model, options) : await OnnxWeightQuantizer.QuantizeAsync(model, feeds, options, cancellationToken: cancellationToken).ConfigureAwait(false);
        }

        model.Save(target);
        QuantizationReport report = new();
        foreach (OnnxWeightReport weight in weights)
        {
            report.Add(weight.Report);
        }

        Console.Write(report.ToTable());
        Console.WriteLine($"Written {target} ({new FileInfo(target).Length:N0} bytes, from {new FileInfo(source).Length:N0}).");
        return new FileInfo(source).Length;
    }

    /// <summary>One feed per .npy file, for the model's only (non-initializer) input.</summary>
    private static NpyFeeds Feeds(OnnxModel model, string directory)
    {
        HashSet<string> initializers = [.. model.Proto.Graph.Initializer.Select(t => t.Name)];
        string[] inputs = [.. model.Proto.Graph.Input.Select(i => i.Name).Where(name => !initializers.Contains(name))];
        if (inputs.Length != 1)
        {
            throw new NotSupportedException($"--calibration-data feeds models with one input; this one has {inputs.Length} ({string.Join(", ", inputs)}).");
        }

        ICalibrationDataSource<NpyArray> arrays = CalibrationDataSource.FromNpyDirectory(directory);
        return new NpyFeeds(arrays, inputs[0]);
    }

    private static long QuantizeCheckpoint(string source, string target, QuantizationScheme scheme, NamePattern[] includes, NamePattern[] excludes, CancellationToken cancellationToken)
    {
        CheckpointQuantizationOptions options = new() { Scheme = scheme };
        foreach (NamePattern pattern in includes)
        {
            options.Include.Add(pattern);
        }

        foreach (NamePattern pattern in excludes)
        {
            options.Exclude.Add(pattern);
        }

        IReadOnlyList<CheckpointTensorReport> reports = [];
        AnsiConsole.Progress().Start(context =>
        {
            ProgressTask task = context.AddTask("Quantizing");
            reports = CheckpointQuantizer.Quantize(source, target, options, new Reporter(p =>
            {
                task.MaxValue = p.BytesTotal;
                task.Value = p.BytesDone;
                task.Description = p.Tensor;
            }), cancellationToken);
        });
        long before = reports.Sum(r => r.BytesBefore), after = reports.Sum(r => r.BytesAfter);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Quantized {reports.Count(r => r.Quantized)} of {reports.Count} tensors: {before / 1e6:F1} MB -> {after / 1e6:F1} MB ({(double)after / before:F3}x) in {target}."));
        return before;
    }

    /// <summary>The process's peak resident memory: VmHWM on Linux, the peak working set elsewhere.</summary>
    private static long PeakResidentBytes()
    {
        const string status = "/proc/self/status";
        if (File.Exists(status))
        {
            string? line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
            if (line is not null)
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
            }
        }

        using Process process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64;
    }

    /// <summary>Reports on the thread that makes the progress, so the display follows at once.</summary>
    private sealed class Reporter(Action<CheckpointProgress> report) : IProgress<CheckpointProgress>
    {
        public void Report(CheckpointProgress value) => report(value);
    }

    /// <summary>Feeds of one model input from a directory of .npy arrays.</summary>
    private sealed class NpyFeeds(ICalibrationDataSource<NpyArray> arrays, string input) : ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>>
    {
        public int? Count => arrays.Count;

        public async IAsyncEnumerable<IReadOnlyCollection<NamedOnnxValue>> ReadBatchesAsync([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await foreach (NpyArray array in arrays.ReadBatchesAsync(cancellationToken).ConfigureAwait(false))
            {
                yield return [NamedOnnxValue.CreateFromTensor(input, new DenseTensor<float>(array.Data, array.Shape))];
            }
        }
    }
}
