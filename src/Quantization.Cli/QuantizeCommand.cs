using System.CommandLine;
using System.Diagnostics;
using System.Globalization;

using Microsoft.ML.OnnxRuntime;

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
        Option<string> mode = new("--mode") { Description = "ONNX only: weight-only (W8A16), static (W8A8, needs --calibration-data) or dynamic (W8A8, MatMul and Gemm, activations quantized at run time; calibration data only with --smoothquant).", DefaultValueFactory = _ => "weight-only" };
        mode.AcceptOnlyFromAmong("weight-only", "static", "dynamic");
        Option<string> format = new("--format") { Description = "ONNX weight-only: store MatMul and Gemm weights as qdq (int8 + DequantizeLinear; the default for --bits 8) or matmulnbits (ONNX Runtime's MatMulNBits, blocks of --group-size along K, activations quantized per block at run time: accuracy_level 4; the default for --bits 4)." };
        format.AcceptOnlyFromAmong("qdq", "matmulnbits");
        Option<string> granularity = new("--granularity") { Description = "One scale per output channel, per group of --group-size inputs or per tensor (MatMulNBits always takes blocks). ONNX models with 4-bit or grouped QDQ weights are upgraded to opset 21.", DefaultValueFactory = _ => "channel" };
        granularity.AcceptOnlyFromAmong("channel", "group", "tensor");
        Option<int> bits = new("--bits") { Description = "Weight bits: 8 (int8) or 4 (int4; ONNX MatMul and Gemm weights as MatMulNBits blocks of --group-size unless --format qdq, other weights as int4 DequantizeLinear of opset 21).", DefaultValueFactory = _ => 8 };
        bits.AcceptOnlyFromAmong("8", "4");
        Option<int> groupSize = new("--group-size") { Description = "Inputs per group with --granularity group or --bits 4; ONNX MatMulNBits blocks (a power of two, at least 16). Default: 32 for ONNX models, 128 for checkpoints." };
        Option<string> algorithm = new("--algorithm") { Description = "ONNX weight-only: how weights are rounded: rtn (to nearest, the default), gptq (GPTQ with error feedback, act-order) or awq (activation-aware input scales and clipping, then to nearest); gptq and awq need --calibration-data.", DefaultValueFactory = _ => "rtn" };
        algorithm.AcceptOnlyFromAmong("rtn", "gptq", "awq");
        Option<bool> asymmetric = new("--asymmetric") { Description = "Asymmetric weights (a zero point per scale); symmetric by default." };
        Option<string> weightType = new("--weight-type") { Description = "ONNX 8-bit weights: int8 (the default) or uint8 (asymmetric, a zero point per scale). ONNX Runtime runs uint8 weights with its u8 x u8 kernels, which do not saturate on x86 CPUs without VNNI (AVX2), where its u8 x s8 kernels can: use uint8 for --mode static or dynamic models that will run there.", DefaultValueFactory = _ => "int8" };
        weightType.AcceptOnlyFromAmong("int8", "uint8");
        Option<string> convention = new("--convention") { Description = "Whose arithmetic computes the parameters.", DefaultValueFactory = _ => "onnx" };
        convention.AcceptOnlyFromAmong("onnx", "torch", "ggml", "golden-stick");
        Option<string[]> include = new("--include") { Description = "Only tensors (safetensors) or the weights of the nodes (ONNX; activations follow --activation-include) matching this glob, or re:regex; repeatable." };
        Option<string[]> exclude = new("--exclude") { Description = "Keep tensors or nodes matching this glob or re:regex in float; repeatable. Safetensors always keeps *embed*, *norm* and *lm_head* too." };
        Option<string> calibration = new("--calibration-data") { Description = "ONNX only: a directory of input batches for static ranges, bias correction and SmoothQuant: one .npz file per batch (numpy.savez) with one array named after each model input (int64, int32, float32, float16, bool...; e.g. input_ids, attention_mask, token_type_ids), or one .npy file per batch for a model with a single input." };
        Option<bool> gptq = new("--gptq") { Description = "The same as --algorithm gptq." };
        Option<bool> stats = new("--stats") { Description = "Print time, throughput and peak memory." };
        Option<string[]> weightOps = new("--weight-ops") { Description = "ONNX only: operator types whose weights are quantized (comma-separated or repeated); Conv, ConvTranspose, MatMul, Gemm by default.", AllowMultipleArgumentsPerToken = true };
        Option<string[]> activationOps = new("--activation-ops") { Description = "ONNX static only: operator types whose activation inputs are always quantized (comma-separated or repeated); Conv, ConvTranspose, MatMul, Gemm by default. Add and the pools are quantized only between such operators unless listed here.", AllowMultipleArgumentsPerToken = true };
        Option<string[]> activationInclude = new("--activation-include") { Description = "ONNX static only: quantize the activations of only the nodes matching this glob or re:regex; repeatable." };
        Option<string[]> keepFloat = new("--keep-float") { Description = "ONNX static only: 'auto' keeps the fewest layers' activations in float to reach --target-cosine on the calibration data; or node-name globs (comma-separated or repeated) / re:regex whose activations stay in float (their weights stay int8)." };
        Option<double> targetCosine = new("--target-cosine") { Description = "With --keep-float auto: the mean output cosine against the float model to reach on the calibration data.", DefaultValueFactory = _ => 0.999 };
        Option<string> observer = new("--observer") { Description = "ONNX static only: how each activation's range is chosen: minmax (the observed range, the default), percentile (of |x|, see --percentile), entropy (TensorRT's KL search) or mse (least expected squared error)." };
        observer.AcceptOnlyFromAmong("minmax", "percentile", "entropy", "mse");
        Option<double> percentile = new("--percentile") { Description = "With --observer percentile: the percentile of |x| that bounds the range.", DefaultValueFactory = _ => PercentileObserver.DefaultPercentile };
        Option<string> smoothQuant = new("--smoothquant") { Description = "ONNX static, or dynamic with --calibration-data: SmoothQuant before quantization, moving activation outliers of MatMul/Gemm inputs into the weights; ALPHA in [0, 1] (0.5 when omitted) or 'auto' to search it per layer (for dynamic, measuring the error as run-time quantization rounds).", Arity = ArgumentArity.ZeroOrOne };
        Option<bool> explicitScales = new("--explicit-scales") { Description = "With --smoothquant: also smooth MatMul/Gemm layers whose input no normalization or linear layer can absorb 1/s into (after Gelu, Reshape or a graph input), by inserting a Mul by 1/s before them. Pair it with 'auto' or a high ALPHA such as 0.8: at 0.5, the layers after Gelu can lose more in their weights than they gain." };
        Option<bool> rangeSearch = new("--range-search") { Description = "ONNX only: choose each weight group's (or channel's) range by its own rounding error, trying 100% down to 80% of its min and max, instead of min and max (data-free clipping; worth it at 4 bits, with gptq too)." };
        Option<bool> quantizeEmbeddings = new("--quantize-embeddings") { Description = "ONNX only: store embedding tables (Gather data of at least a million elements) as int8 per row, read by ONNX Runtime's GatherBlockQuantized; true by default, false keeps them in float.", DefaultValueFactory = _ => true };
        Command command = new("quantize", "Quantize a model or checkpoint to int8 or int4.")
        {
            input, output, mode, format, bits, granularity, groupSize, algorithm, asymmetric, weightType, convention, include, exclude, calibration, gptq, stats, weightOps, activationOps, activationInclude, keepFloat, targetCosine, observer, percentile, smoothQuant, explicitScales, rangeSearch, quantizeEmbeddings,
        };
        command.SetAction(CliRunner.Wrap(async (parse, cancellationToken) =>
        {
            string source = parse.GetValue(input)!;
            bool onnx = source.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase);
            int weightBits = parse.GetValue(bits);
            int group = parse.GetResult(groupSize) is { Implicit: false } ? parse.GetValue(groupSize) : onnx ? new MatMulNBitsOptions().BlockSize : 128;
            if (group <= 0)
            {
                throw new ArgumentException($"--group-size must be positive, not {group}.");
            }

            // A 4-bit checkpoint is grouped unless told otherwise: compressed-tensors' W4A16 recipe.
            string grainName = !onnx && weightBits == 4 && !Given(parse, granularity) ? "group" : parse.GetValue(granularity)!;
            QuantizationGranularity grain = grainName switch
            {
                "group" => QuantizationGranularity.PerGroup(group),
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
            bool unsigned = parse.GetValue(weightType) == "uint8";
            if (unsigned && (weightBits == 4 || !onnx))
            {
                throw new ArgumentException("--weight-type uint8 applies to 8-bit weights of ONNX models.");
            }

            bool symmetric = !parse.GetValue(asymmetric) && !unsigned;
            QuantizationScheme scheme = weightBits == 4
                ? new(symmetric ? QuantizedType.Int4 : QuantizedType.UInt4, symmetric, grain, arithmetic, symmetric ? QuantizationRange.Full : null)
                : new(unsigned ? QuantizedType.UInt8 : QuantizedType.Int8, symmetric, grain, arithmetic);
            NamePattern[] includes = [.. (parse.GetValue(include) ?? []).Select(p => new NamePattern(p))];
            NamePattern[] excludes = [.. (parse.GetValue(exclude) ?? []).Select(p => new NamePattern(p))];
            long started = Stopwatch.GetTimestamp();
            OnnxRules rules = new(
                OpList(parse.GetValue(weightOps)),
                OpList(parse.GetValue(activationOps)),
                [.. (parse.GetValue(activationInclude) ?? []).Select(p => new NamePattern(p))],
                [.. (parse.GetValue(keepFloat) ?? []).SelectMany(v => v.StartsWith("re:", StringComparison.Ordinal) ? [v] : v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))],
                parse.GetValue(targetCosine),
                parse.GetValue(observer) is string method ? Enum.Parse<CalibrationMethod>(method, ignoreCase: true) : null,
                parse.GetValue(percentile),
                parse.GetResult(smoothQuant) is null ? null : parse.GetValue(smoothQuant) ?? "0.5",
                parse.GetValue(explicitScales));
            // MatMulNBits is the default of 4-bit ONNX models only; a checkpoint has no operators and is pack-quantized.
            bool matMulNBits = (parse.GetValue(format) ?? (onnx && weightBits == 4 ? "matmulnbits" : "qdq")) == "matmulnbits";
            if (matMulNBits && (!onnx || parse.GetValue(mode) != "weight-only"))
            {
                throw new ArgumentException(weightBits == 4 && onnx
                    ? "--bits 4 applies to --mode weight-only: 4-bit weights with float activations (MatMulNBits)."
                    : "--format matmulnbits applies to ONNX models with --mode weight-only.");
            }

            if (matMulNBits && Given(parse, groupSize) && (group < 16 || !int.IsPow2(group)))
            {
                throw new ArgumentException($"--group-size for MatMulNBits blocks is a power of two of at least 16, not {group}.");
            }

            string rounding = parse.GetValue(gptq) ? "gptq" : parse.GetValue(algorithm)!;
            if (!onnx && rounding != "rtn")
            {
                throw new ArgumentException($"--algorithm {rounding} runs calibration data through the model, so it applies to ONNX models; a safetensors checkpoint is rounded to nearest.");
            }

            Option[] onnxOnly = [mode, format, calibration, gptq, weightOps, activationOps, activationInclude, keepFloat, targetCosine, observer, percentile, smoothQuant, explicitScales, rangeSearch, quantizeEmbeddings];
            if (!onnx && onnxOnly.FirstOrDefault(o => Given(parse, o)) is Option ignored)
            {
                throw new ArgumentException($"{ignored.Name} applies to ONNX models; a safetensors checkpoint is quantized weight-only.");
            }

            if (Given(parse, targetCosine) && rules.KeepFloat is not ["auto"])
            {
                throw new ArgumentException("--target-cosine applies to --keep-float auto.");
            }

            if (Given(parse, percentile) && rules.Observer != CalibrationMethod.Percentile)
            {
                throw new ArgumentException("--percentile applies to --observer percentile.");
            }

            if (rules.TargetCosine is not (> 0 and <= 1))
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"--target-cosine must be in (0, 1], not {rules.TargetCosine}."));
            }

            if (rules.Percentile is not (> 0 and <= 100))
            {
                throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"--percentile must be in (0, 100], not {rules.Percentile}."));
            }

            long bytes = onnx
                ? await QuantizeOnnxAsync(source, parse.GetValue(output)!, parse.GetValue(mode)!, matMulNBits ? group : null, scheme, includes, excludes, rules, parse.GetValue(calibration), rounding, parse.GetValue(rangeSearch), parse.GetValue(quantizeEmbeddings), cancellationToken).ConfigureAwait(false)
                : QuantizeCheckpoint(source, parse.GetValue(output)!, scheme, includes, excludes, cancellationToken);
            if (parse.GetValue(stats))
            {
                // A checkpoint streams through once, so its throughput means something; an ONNX model's time is mostly calibration.
                double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
                string throughput = onnx ? "" : string.Create(CultureInfo.InvariantCulture, $" ({bytes / 1e9 / seconds:F2} GB/s)");
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"stats: {bytes / 1e9:F3} GB in {seconds:F2} s{throughput}, peak resident memory {PeakResidentBytes() / 1e6:F0} MB"));
            }
        }));
        return command;
    }

    /// <summary>Whether the command line names the option (a default value does not count).</summary>
    private static bool Given(ParseResult parse, Option option) => parse.GetResult(option) is { Implicit: false };

    /// <summary>Operator types given comma-separated, repeated or both; <see langword="null"/> when none were given.</summary>
    private static string[]? OpList(string[]? values) =>
        values is null or [] ? null : [.. values.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))];

    private static async Task<long> QuantizeOnnxAsync(string source, string target, string mode, int? matMulNBitsBlock, QuantizationScheme scheme, NamePattern[] includes, NamePattern[] excludes, OnnxRules rules, string? calibrationDirectory, string rounding, bool rangeSearch, bool quantizeEmbeddings, CancellationToken cancellationToken)
    {
        if (mode != "static" && rules.UsesStaticActivations)
        {
            throw new ArgumentException("--activation-ops, --activation-include, --keep-float and --observer choose how activations are quantized from calibration data: they need --mode static.");
        }

        if (rules.SmoothQuant is null ? rules.ExplicitScales : mode == "weight-only")
        {
            throw new ArgumentException(rules.SmoothQuant is null ? "--explicit-scales applies to --smoothquant." : "--smoothquant applies to --mode static, or --mode dynamic with --calibration-data.");
        }

        if (mode == "dynamic" && (calibrationDirectory is null) != (rules.SmoothQuant is null))
        {
            throw new ArgumentException(calibrationDirectory is null
                ? "--mode dynamic with --smoothquant needs --calibration-data: a directory of .npz input batches (or .npy for a single-input model)."
                : "--mode dynamic quantizes activations at run time and takes no --calibration-data, except for --smoothquant.");
        }

        if (rounding != "rtn" && (mode != "weight-only" || calibrationDirectory is null))
        {
            throw new ArgumentException(mode != "weight-only"
                ? $"--algorithm {rounding} applies to --mode weight-only with --calibration-data; --mode {mode} rounds weights to nearest."
                : $"--algorithm {rounding} needs --calibration-data: a directory of .npz input batches (or .npy for a single-input model).");
        }

        OnnxModel model = OnnxModel.Load(source);
        long opset = model.Opset;
        bool int4Qdq = scheme.Type.GetBitWidth() == 4 || scheme.Granularity.Kind == GranularityKind.PerGroup;
        OnnxOpsetUpgrader.Upgrade(model, int4Qdq ? 21 : OnnxOpsetUpgrader.MinimumTargetOpset);
        if (opset < model.Opset)
        {
            Console.WriteLine(int4Qdq
                ? $"Upgraded the model from opset {opset} to {model.Opset} (int4 and blocked DequantizeLinear need 21)."
                : $"Upgraded the model from opset {opset} to {model.Opset} (per-channel DequantizeLinear needs 13).");
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
            _ => new OnnxWeightQuantizationOptions { MatMulNBits = matMulNBitsBlock is int block ? new MatMulNBitsOptions { BlockSize = block } : null },
        };
        CheckModeTakes(mode, scheme, rules.WeightOps, options.OpTypes);
        options.Scheme = scheme;
        options.Gptq = rounding == "gptq" ? new GptqOptions { ActivationOrder = true } : null;
        options.Awq = rounding == "awq" ? new AwqOptions() : null;
        options.RangeSearch = rangeSearch ? new WeightRangeSearch() : null;
        options.Embeddings = quantizeEmbeddings ? options.Embeddings : null;
        foreach (NamePattern pattern in includes)
        {
            options.IncludeNodes.Add(pattern);
        }

        foreach (NamePattern pattern in excludes)
        {
            options.ExcludeNodes.Add(pattern);
        }

        rules.ApplyTo(options);
        ICalibrationDataSource<IReadOnlyCollection<NamedOnnxValue>>? feeds = calibrationDirectory is null ? null : OnnxCalibrationData.FromDirectory(model, calibrationDirectory);
        IReadOnlyList<OnnxWeightReport> weights;
        if (options is OnnxStaticQuantizationOptions staticOptions)
        {
            OnnxStaticQuantizationResult result = await OnnxStaticQuantizer.QuantizeAsync(model, feeds ?? throw new ArgumentException("--mode static needs --calibration-data: a directory of .npz input batches (or .npy for a single-input model)."), staticOptions, cancellationToken: cancellationToken).ConfigureAwait(false);
            weights = result.Weights;
            Console.WriteLine($"Static W8A8: {result.Activations.Count} activations, {result.Biases.Count} int32 biases, {result.RaisedWeightScales} weight scales raised so that biases fit in int32.");
            if (result.SmoothQuant is OnnxSmoothQuantResult smoothed)
            {
                WriteSmoothQuant(smoothed);
            }

            if (result.MixedPrecision is OnnxMixedPrecisionResult mixed)
            {
                WriteMixedPrecision(mixed);
            }
        }
        else if (options is OnnxDynamicQuantizationOptions dynamicOptions)
        {
            OnnxDynamicQuantizationResult result = feeds is null
                ? OnnxDynamicQuantizer.Quantize(model, dynamicOptions)
                : await OnnxDynamicQuantizer.QuantizeAsync(model, feeds, dynamicOptions, cancellationToken: cancellationToken).ConfigureAwait(false);
            weights = result.Weights;
            Console.WriteLine($"Dynamic W8A8: {result.Weights.Count} weights, {result.Activations.Count} activations quantized at run time.");
            if (result.SmoothQuant is OnnxSmoothQuantResult smoothed)
            {
                WriteSmoothQuant(smoothed);
            }
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

    /// <summary>
    /// Refuses, in the command line's words, what a mode's quantizer would refuse in its API's: weight operators it does
    /// not know (<paramref name="known"/>, the mode's defaults) and weight layouts it does not write.
    /// </summary>
    private static void CheckModeTakes(string mode, QuantizationScheme scheme, string[]? weightOps, ISet<string> known)
    {
        if (weightOps?.Where(op => !known.Contains(op)).ToArray() is [_, ..] unknown)
        {
            throw new ArgumentException($"--weight-ops {(mode == "dynamic" ? "with --mode dynamic " : "")}takes {string.Join(", ", known)}; not {string.Join(", ", unknown)}.");
        }

        bool eightBit = scheme.Type.GetBitWidth() == 8, perChannelOrTensor = scheme.Granularity.Kind is GranularityKind.PerChannel or GranularityKind.PerTensor;
        if (mode == "static" && !(eightBit && perChannelOrTensor))
        {
            throw new NotSupportedException("--mode static takes 8-bit weights with --granularity channel or tensor (their scales give the int32 biases theirs); 4-bit and grouped weights are --mode weight-only.");
        }

        if (mode == "dynamic" && !(eightBit && perChannelOrTensor && (scheme.Symmetric || scheme.Type == QuantizedType.UInt8)))
        {
            throw new NotSupportedException(scheme.Symmetric || scheme.Type == QuantizedType.UInt8
                ? "--mode dynamic stores symmetric int8 (or, with --weight-type uint8, asymmetric uint8) weights with --granularity channel or tensor."
                : "--mode dynamic stores symmetric int8 weights (zero point 0, which ONNX Runtime's integer kernels take fastest) or, with --weight-type uint8, asymmetric uint8: drop --asymmetric or add --weight-type uint8.");
        }
    }

    /// <summary>SmoothQuant's report: per smoothed group its α and the largest input and weight magnitudes before and after; the groups left alone and why.</summary>
    private static void WriteSmoothQuant(OnnxSmoothQuantResult smoothed)
    {
        Console.WriteLine($"SmoothQuant: {smoothed.Groups.Count} groups smoothed, {smoothed.Skipped.Count} left alone.");
        foreach (OnnxSmoothQuantGroup group in smoothed.Groups)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {string.Join(", ", group.Consumers)} after {group.Producer} ({group.ProducerKind}): alpha {group.Alpha:0.##}, max|X| {group.MaxInputBefore:G4} -> {group.MaxInputAfter:G4}, max|W| {group.MaxWeightBefore:G4} -> {group.MaxWeightAfter:G4}"));
        }

        foreach (OnnxSkippedScaleGroup skipped in smoothed.Skipped)
        {
            Console.WriteLine($"  left alone: {string.Join(", ", skipped.Consumers)}: {skipped.Reason}");
        }
    }

    /// <summary>The mixed-precision search's report: the cosines it measured and the layers it kept, each with its cosine when quantized alone.</summary>
    private static void WriteMixedPrecision(OnnxMixedPrecisionResult mixed)
    {
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Mixed precision on {mixed.Batches} calibration batches (mean output cosine vs fp32): weights only {mixed.WeightsOnlyCosine:F6}, every activation {mixed.AllQuantizedCosine:F6}, chosen {mixed.FinalCosine:F6} (target {mixed.TargetCosine})."));
        if (!mixed.ReachesTarget)
        {
            Console.WriteLine("The target is out of reach with int8 weights: every layer keeps float activations.");
        }

        Console.WriteLine(mixed.KeptInFloat.Count == 0 ? "Kept no layer in float." : $"Kept {mixed.KeptInFloat.Count} of {mixed.Layers.Count} layers' activations in float, the most sensitive (output cosine with only that layer's activations quantized):");
        foreach (OnnxLayerSensitivity layer in mixed.Layers.Where(l => l.KeptInFloat))
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {layer.Node} ({layer.OpType}, input {string.Join(", ", layer.Inputs)}): {layer.Cosine:F6}"));
        }
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
        if (Console.IsOutputRedirected)
        {
            // A file or a pipe gets whole lines, one per tensor written, instead of a live display redrawn in place.
            reports = CheckpointQuantizer.Quantize(source, target, options, new Reporter(p =>
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{100.0 * p.BytesDone / Math.Max(p.BytesTotal, 1),3:F0}%] {p.Tensor}"))), cancellationToken);
        }
        else
        {
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
        }

        long before = reports.Sum(r => r.BytesBefore), after = reports.Sum(r => r.BytesAfter);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Quantized {reports.Count(r => r.Quantized)} of {reports.Count} tensors: {before / 1e6:F1} MB -> {after / 1e6:F1} MB ({(double)after / before:F3}x) in {target}."));
        Console.WriteLine($"Layout: {InspectCommand.Describe(scheme)}.");
        return before;
    }

    /// <summary>The process's peak resident memory (VmHWM on Linux, as the runtime reads it).</summary>
    private static long PeakResidentBytes()
    {
        using Process process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64;
    }

    /// <summary>Reports on the thread that makes the progress, so the display follows at once.</summary>
    private sealed class Reporter(Action<CheckpointProgress> report) : IProgress<CheckpointProgress>
    {
        public void Report(CheckpointProgress value) => report(value);
    }

    /// <summary>The ONNX rules of the command line beyond the scheme: operator types and activation choices.</summary>
    private sealed record OnnxRules(string[]? WeightOps, string[]? ActivationOps, NamePattern[] ActivationIncludes, string[] KeepFloat, double TargetCosine, CalibrationMethod? Observer, double Percentile, string? SmoothQuant, bool ExplicitScales)
    {
        /// <summary>Gets a value indicating whether a rule only static quantization has is given (SmoothQuant is not one: dynamic mode smooths too).</summary>
        public bool UsesStaticActivations => ActivationOps is not null || ActivationIncludes.Length > 0 || KeepFloat.Length > 0 || Observer is not null;

        public void ApplyTo(OnnxWeightQuantizationOptions options)
        {
            if (WeightOps is not null)
            {
                Replace(options.OpTypes, WeightOps);
            }

            if (options is OnnxDynamicQuantizationOptions dynamic)
            {
                dynamic.SmoothQuant = SmoothQuantOptions();
            }

            if (options is not OnnxStaticQuantizationOptions activations)
            {
                return;
            }

            if (ActivationOps is not null)
            {
                Replace(activations.ActivationOpTypes, ActivationOps);
            }

            foreach (NamePattern pattern in ActivationIncludes)
            {
                activations.ActivationIncludeNodes.Add(pattern);
            }

            if (Observer is CalibrationMethod method)
            {
                _ = method.CreateObserver(activations.ActivationScheme, Percentile); // checks the percentile before calibration starts
                activations.CreateObserver = scheme => method.CreateObserver(scheme, Percentile);
            }

            activations.SmoothQuant = SmoothQuantOptions();

            if (KeepFloat is ["auto"])
            {
                activations.MixedPrecision = new OnnxMixedPrecisionOptions { TargetCosine = TargetCosine };
                return;
            }

            if (KeepFloat.Contains("auto"))
            {
                throw new ArgumentException("--keep-float takes either 'auto' or node-name patterns, not both.");
            }

            foreach (string pattern in KeepFloat)
            {
                activations.ActivationExcludeNodes.Add(new NamePattern(pattern));
            }
        }

        /// <summary>SmoothQuant's options from --smoothquant and --explicit-scales, or <see langword="null"/> without --smoothquant.</summary>
        private OnnxSmoothQuantOptions? SmoothQuantOptions() => SmoothQuant switch
        {
            null => null,
            "auto" => new OnnxSmoothQuantOptions { SearchAlpha = true, ExplicitScales = ExplicitScales },
            _ => new OnnxSmoothQuantOptions
            {
                Alpha = double.TryParse(SmoothQuant, NumberStyles.Float, CultureInfo.InvariantCulture, out double alpha) && alpha is >= 0 and <= 1 ? alpha : throw new ArgumentException($"--smoothquant takes an alpha in [0, 1] or 'auto', not '{SmoothQuant}'."),
                ExplicitScales = ExplicitScales,
            },
        };

        private static void Replace(ISet<string> set, string[] values)
        {
            set.Clear();
            set.UnionWith(values);
        }
    }
}
