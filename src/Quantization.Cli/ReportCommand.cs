using System.CommandLine;
using System.Text.Json.Nodes;

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
                : CompareCheckpoint(source, parse.GetValue(original)!);
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

    /// <summary>Every int8 or uint8 initializer behind a DequantizeLinear whose output is a float initializer of the original.</summary>
    private static QuantizationReport CompareOnnx(OnnxModel quantized, OnnxModel original)
    {
        GraphProto graph = quantized.Proto.Graph;
        Dictionary<string, TensorProto> initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Dictionary<string, TensorProto> floats = original.Proto.Graph.Initializer.Where(t => t.DataType == (int)TensorProto.Types.DataType.Float).ToDictionary(t => t.Name, StringComparer.Ordinal);
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
            report.Add(TensorErrorReport.Compare(node.Output[0], original.ReadFloats(reference), tensor.Dequantize(), reference.CalculateSize(), data.RawData.Length + (scales.Length * 4L) + zeroPoints.Length));
        }

        return report;
    }

    /// <summary>Every tensor with a scale, read back with the scheme its config.json states.</summary>
    private static QuantizationReport CompareCheckpoint(string source, string originalPath)
    {
        string directory = Directory.Exists(source) ? source : Path.GetDirectoryName(Path.GetFullPath(source))!;
        JsonNode? weights = (JsonNode.Parse(File.ReadAllBytes(Path.Combine(directory, "config.json")))?["quantization_config"]?["config_groups"]?["group_0"]?["weights"])
            ?? throw new InvalidDataException($"'{directory}' has no config.json with a compressed-tensors quantization_config.");
        string strategy = (string?)weights["strategy"] ?? "channel";
        QuantizationGranularity granularity = strategy switch
        {
            "channel" => QuantizationGranularity.PerChannel(0),
            "group" => QuantizationGranularity.PerGroup((int?)weights["group_size"] ?? throw new InvalidDataException("A group strategy without group_size.")),
            "tensor" => QuantizationGranularity.PerTensor,
            _ => throw new NotSupportedException($"Strategy '{strategy}' is not one ptq writes."),
        };
        QuantizationScheme scheme = new(QuantizedType.Int8, (bool?)weights["symmetric"] ?? true, granularity);
        using SafeTensorsCheckpoint quantized = SafeTensorsCheckpoint.Open(source);
        using SafeTensorsCheckpoint original = SafeTensorsCheckpoint.Open(originalPath);
        HashSet<string> names = [.. quantized.Tensors.Select(t => t.Tensor.Name)];
        QuantizationReport report = new();
        foreach ((SafeTensorsFile _, SafeTensorInfo tensor) in quantized.Tensors.Where(t => names.Contains(t.Tensor.Name + "_scale")))
        {
            QuantizedTensor restored = CheckpointQuantizer.ReadQuantized(quantized, tensor.Name, scheme);
            SafeTensorsFile file = original.FileOf(tensor.Name);
            report.Add(TensorErrorReport.Compare(tensor.Name, file.ReadSingles(tensor.Name), restored.Dequantize(), file[tensor.Name].Length, restored.SizeInBytes));
        }

        return report;
    }
}
