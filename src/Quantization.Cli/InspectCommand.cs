using System.CommandLine;
using System.Globalization;

using Quantization.Onnx;
using Quantization.Onnx.Protos;

using Spectre.Console;

namespace Quantization.Cli;

/// <summary><c>ptq inspect</c>: what a model or checkpoint holds.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        Argument<string> input = new("input") { Description = "An .onnx model, or a .safetensors file, index .json or checkpoint directory." };
        Command command = new("inspect", "List the tensors of a model or checkpoint: types, shapes, sizes and quantization (bits, layout, parameters, group size).") { input };
        command.SetAction(CliRunner.Wrap((parse, _) =>
        {
            string source = parse.GetValue(input)!;
            if (source.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            {
                InspectOnnx(OnnxModel.Load(source));
            }
            else
            {
                using SafeTensorsCheckpoint checkpoint = SafeTensorsCheckpoint.Open(source);
                InspectCheckpoint(checkpoint, source);
            }

            return Task.CompletedTask;
        }));
        return command;
    }

    private static void InspectOnnx(OnnxModel model)
    {
        GraphProto graph = model.Proto.Graph;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"ONNX IR {model.Proto.IrVersion}, opset {model.Opset}, {graph.Node.Count} nodes: {string.Join(", ", graph.Node.GroupBy(n => n.OpType).OrderByDescending(g => g.Count()).Select(g => $"{g.Key} {g.Count()}"))}"));
        Dictionary<string, NodeProto> dequantizers = graph.Node.Where(n => n.OpType == "DequantizeLinear").ToDictionary(n => n.Input[0], StringComparer.Ordinal);
        Table table = new Table().AddColumns("initializer", "type", "shape", "bytes", "quantization");
        foreach (TensorProto tensor in graph.Initializer)
        {
            string quantization = dequantizers.TryGetValue(tensor.Name, out NodeProto? node)
                ? $"-> {node.Output[0]}, {(graph.Initializer.FirstOrDefault(t => t.Name == node.Input[1])?.Dims.Count > 0 ? $"per channel (axis {node.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 1})" : "per tensor")}"
                : string.Empty;
            AddRow(table, tensor.Name, ((TensorProto.Types.DataType)tensor.DataType).ToString(), $"[{string.Join(", ", tensor.Dims)}]", Bytes(tensor).ToString("N0", CultureInfo.InvariantCulture), quantization);
        }

        AnsiConsole.Write(table);
    }

    /// <summary>Describes a checkpoint scheme: its compressed-tensors format, bits, symmetry and granularity.</summary>
    /// <param name="scheme">A scheme <see cref="CheckpointQuantizer"/> writes.</param>
    /// <returns>For example "compressed-tensors pack-quantized, 4-bit symmetric (Int4), group 128".</returns>
    internal static string Describe(QuantizationScheme scheme)
    {
        int bits = scheme.Type.GetBitWidth();
        return $"compressed-tensors {(bits == 4 ? "pack-quantized" : "int-quantized")}, {bits}-bit {(scheme.Symmetric ? "symmetric" : "asymmetric")} ({scheme.Type}), {Grain(scheme)}";
    }

    private static string Grain(QuantizationScheme scheme) => scheme.Granularity.Kind switch
    {
        GranularityKind.PerGroup => string.Create(CultureInfo.InvariantCulture, $"group {scheme.Granularity.GroupSize}"),
        GranularityKind.PerChannel => "per output channel",
        _ => "per tensor",
    };

    private static void InspectCheckpoint(SafeTensorsCheckpoint checkpoint, string source)
    {
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"safetensors, {checkpoint.Files.Count} file(s), {checkpoint.Tensors.Count()} tensors, {checkpoint.Tensors.Sum(t => t.Tensor.Length):N0} bytes"));
        QuantizationScheme? scheme = null;
        try
        {
            scheme = CheckpointQuantizer.ReadScheme(source);
            Console.WriteLine(scheme is null ? "quantization_config: none" : $"quantization_config: {Describe(scheme)}");
        }
        catch (NotSupportedException e)
        {
            Console.WriteLine($"quantization_config: not one ptq reads ({e.Message})");
        }

        HashSet<string> names = [.. checkpoint.Tensors.Select(t => t.Tensor.Name)];
        Table table = new Table().AddColumns("tensor", "type", "shape", "bytes", "quantization");
        foreach ((SafeTensorsFile _, SafeTensorInfo tensor) in checkpoint.Tensors)
        {
            AddRow(table, tensor.Name, tensor.DataType.HeaderName(), $"[{string.Join(", ", tensor.Shape)}]", tensor.Length.ToString("N0", CultureInfo.InvariantCulture), Quantization(checkpoint, names, tensor, scheme));
        }

        AnsiConsole.Write(table);
    }

    /// <summary>
    /// What a tensor holds when it is the data of a quantized weight (int8 <c>W</c> or 4-bit <c>W_packed</c> beside a
    /// <c>W_scale</c>): bits, layout, scales, zero points, granularity and the bytes of the weight with its parameters.
    /// </summary>
    private static string Quantization(SafeTensorsCheckpoint checkpoint, HashSet<string> names, SafeTensorInfo tensor, QuantizationScheme? scheme)
    {
        bool packed = tensor.Name.EndsWith("_packed", StringComparison.Ordinal);
        string weight = packed ? tensor.Name[..^"_packed".Length] : tensor.Name;
        if (!names.Contains(weight + "_scale"))
        {
            return string.Empty;
        }

        SafeTensorInfo scale = checkpoint.FileOf(weight + "_scale")[weight + "_scale"];
        string[] parts = [tensor.Name, weight + "_scale", weight + "_zero_point", weight + "_shape"];
        long bytes = parts.Where(names.Contains).Sum(n => checkpoint.FileOf(n)[n].Length);
        string layout = packed
            ? $"{scheme?.Type.GetBitWidth() ?? 4}-bit packed {OriginalShape(checkpoint, names, weight + "_shape")}, {scale.DataType.HeaderName()} scales [{string.Join(", ", scale.Shape)}]"
            : $"int8, scales [{string.Join(", ", scale.Shape)}]";
        string zeroPoints = names.Contains(weight + "_zero_point") ? ", zero points" : string.Empty;
        string grain = scheme is null ? string.Empty : $"; {Grain(scheme)}";
        return string.Create(CultureInfo.InvariantCulture, $"{layout}{zeroPoints}{grain}; {bytes:N0} bytes with parameters");
    }

    /// <summary>The [N, K] a pack-quantized weight's shape tensor holds, or "?" when it is missing or not an integer pair.</summary>
    private static string OriginalShape(SafeTensorsCheckpoint checkpoint, HashSet<string> names, string name)
    {
        if (!names.Contains(name) || checkpoint.FileOf(name)[name] is not { DataType: SafeTensorDataType.Int64, Shape: [2] })
        {
            return "?";
        }

        ReadOnlySpan<long> shape = checkpoint.FileOf(name).GetSpan<long>(name);
        return string.Create(CultureInfo.InvariantCulture, $"[{shape[0]}, {shape[1]}]");
    }

    /// <summary>Adds a row of plain text (names and shapes hold brackets, which Spectre would read as markup).</summary>
    private static void AddRow(Table table, params string[] cells) => table.AddRow([.. cells.Select(c => new Text(c))]);

    private static long Bytes(TensorProto tensor) =>
        !tensor.RawData.IsEmpty ? tensor.RawData.Length
        : tensor.DataLocation == TensorProto.Types.DataLocation.External ? long.Parse(tensor.ExternalData.FirstOrDefault(e => e.Key == "length")?.Value ?? "0", CultureInfo.InvariantCulture)
        : (tensor.FloatData.Count * 4L) + (tensor.Int32Data.Count * 4L) + (tensor.Int64Data.Count * 8L) + (tensor.DoubleData.Count * 8L);
}
