using System.CommandLine;

using Quantization.Onnx;
using Quantization.Onnx.Protos;

namespace Quantization.Cli;

/// <summary><c>ptq report</c>: the error of each quantized tensor against the original.</summary>
internal static class ReportCommand
{
    public static Command Create()
    {
        Argument<string> quantized = new("quantized") { Description = "The quantized .onnx model or checkpoint." };
        Option<string> original = new("--original") { Description = "The model or checkpoint it was quantized from.", Required = true };
        Option<bool> json = new("--json") { Description = "Print JSON instead of a table." };
        Command command = new("report", "Compare a quantized model or checkpoint with its original: SQNR, cosine, errors and sizes per tensor.") { quantized, original, json };
        command.SetAction(CliRunner.Wrap((parse, _) =>
        {
            string source = parse.GetValue(quantized)!;
            QuantizationReport report = source.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)
                ? CompareOnnx(OnnxModel.Load(source), Prepared(parse.GetValue(original)!))
                : CompareCheckpoint(source, parse.GetValue(original)!, parse.GetValue(json));
            if (report.Tensors.Count == 0)
            {
                throw new InvalidDataException("No quantized tensor of the first file has a float counterpart of the same name in the original.");
            }

            Console.Write(parse.GetValue(json) ? report.ToJson() + Environment.NewLine : report.ToTable());
            return Task.CompletedTask;
        }));
        return command;
    }

    /// <summary>The original as <c>ptq quantize</c> prepares it before quantizing: upgraded to opset 13 and with BatchNormalization folded, so the weights compared are the ones quantized.</summary>
    private static OnnxModel Prepared(string path)
    {
        OnnxModel model = OnnxModel.Load(path);
        OnnxOpsetUpgrader.Upgrade(model);
        OnnxPreprocessor.FoldBatchNormalization(model);
        return model;
    }

    /// <summary>
    /// Every int8 or uint8 initializer behind a DequantizeLinear whose output is a float weight of the original (an
    /// initializer or a Constant node's value); the bytes before and after are counted as <c>ptq quantize</c> counts them:
    /// 4 per float, and the codes plus a float scale and a zero-point byte per parameter.
    /// </summary>
    private static QuantizationReport CompareOnnx(OnnxModel quantized, OnnxModel original)
    {
        GraphProto graph = quantized.Proto.Graph;
        Dictionary<string, TensorProto> initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Dictionary<string, TensorProto> floats = original.Proto.Graph.Initializer.Select(t => (t.Name, Tensor: t))
            .Concat(original.Proto.Graph.Node
                .Where(n => n.OpType == "Constant" && n.Output.Count == 1)
                .SelectMany(n => n.Attribute.Where(a => a.Name == "value" && a.T is not null).Select(a => (Name: n.Output[0], Tensor: a.T))))
            .Where(c => c.Tensor.DataType == (int)TensorProto.Types.DataType.Float)
            .DistinctBy(c => c.Name, StringComparer.Ordinal)
            .ToDictionary(c => c.Name, c => c.Tensor, StringComparer.Ordinal);
        QuantizationReport report = new();
        foreach (NodeProto node in graph.Node.Where(n => n.OpType == "DequantizeLinear" && n.Input.Count == 3))
        {
            if (!floats.TryGetValue(node.Output[0], out TensorProto? reference) || !initializers.TryGetValue(node.Input[0], out TensorProto? data)
                || data.DataType is not ((int)TensorProto.Types.DataType.Int8 or (int)TensorProto.Types.DataType.Uint8)
                || !initializers.TryGetValue(node.Input[1], out TensorProto? scale) || !initializers.TryGetValue(node.Input[2], out TensorProto? zeroPoint))
            {
                continue;
            }

            int[] shape = [.. data.Dims.Select(d => checked((int)d))];
            float[] scales = quantized.ReadFloats(scale);
            QuantizationGranularity granularity = scale.Dims.Count == 0 ? QuantizationGranularity.PerTensor : QuantizationGranularity.PerChannel((int)(node.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 1));
            bool unsigned = data.DataType == (int)TensorProto.Types.DataType.Uint8;
            int[] zeroPoints = [.. zeroPoint.RawData.Span.ToArray().Select(z => unsigned ? z : (int)(sbyte)z)];
            QuantizationScheme scheme = new(unsigned ? QuantizedType.UInt8 : QuantizedType.Int8, symmetric: zeroPoints.All(z => z == 0) && !unsigned, granularity);
            QuantizedTensor tensor = new(data.RawData.Span, shape, scheme, new QuantizationParameters(scales, zeroPoints), node.Output[0]);
            report.Add(TensorErrorReport.Compare(original.ReadFloats(reference), tensor));
        }

        return report;
    }

    /// <summary>
    /// Every quantized weight (int8 <c>W</c> or 4-bit <c>W_packed</c> beside a <c>W_scale</c>) that the original holds, read
    /// back with the scheme its config.json states (printed above the table); the bytes after are those stored for the
    /// weight and its parameters.
    /// </summary>
    private static QuantizationReport CompareCheckpoint(string source, string originalPath, bool json)
    {
        QuantizationScheme scheme = CheckpointQuantizer.ReadScheme(source)
            ?? throw new InvalidDataException($"'{source}' has no config.json with a compressed-tensors quantization_config.");
        if (!json)
        {
            Console.WriteLine($"{source}: {InspectCommand.Describe(scheme)}");
        }

        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(source);
        using SafeTensorsCheckpoint original = SafeTensorsCheckpoint.Open(originalPath);
        HashSet<string> names = [.. quantized.Tensors.Select(t => t.Tensor.Name)], originals = [.. original.Tensors.Select(t => t.Tensor.Name)];
        QuantizationReport report = new();
        foreach (string weight in names.Where(n => n.EndsWith("_scale", StringComparison.Ordinal)).Select(n => n[..^"_scale".Length]).Where(w => originals.Contains(w) && (names.Contains(w) || names.Contains(w + "_packed"))).Order(StringComparer.Ordinal))
        {
            QuantizedTensor restored = CheckpointQuantizer.ReadQuantized(quantized, weight, scheme);
            SafeTensorsFile file = original.FileOf(weight);
            long stored = new[] { weight, weight + "_packed", weight + "_scale", weight + "_zero_point", weight + "_shape" }.Where(names.Contains).Sum(n => quantized.FileOf(n)[n].Length);
            report.Add(TensorErrorReport.Compare(weight, file.ReadSingles(weight), restored.Dequantize(), file[weight].Length, stored));
        }

        return report;
    }
}
