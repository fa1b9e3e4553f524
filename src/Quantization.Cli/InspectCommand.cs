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
        Command command = new("inspect", "List the tensors of a model or checkpoint: types, shapes, sizes and quantization parameters.") { input };
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
                InspectCheckpoint(checkpoint);
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

    private static void InspectCheckpoint(SafeTensorsCheckpoint checkpoint)
    {
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"safetensors, {checkpoint.Files.Count} file(s), {checkpoint.Tensors.Count()} tensors, {checkpoint.Tensors.Sum(t => t.Tensor.Length):N0} bytes"));
        HashSet<string> names = [.. checkpoint.Tensors.Select(t => t.Tensor.Name)];
        Table table = new Table().AddColumns("tensor", "type", "shape", "bytes", "quantization");
        foreach ((SafeTensorsFile file, SafeTensorInfo tensor) in checkpoint.Tensors)
        {
            string quantization = names.Contains(tensor.Name + "_scale")
                ? $"int8, scales [{string.Join(", ", checkpoint.FileOf(tensor.Name + "_scale")[tensor.Name + "_scale"].Shape)}]{(names.Contains(tensor.Name + "_zero_point") ? ", zero points" : string.Empty)}"
                : string.Empty;
            AddRow(table, tensor.Name, tensor.DataType.HeaderName(), $"[{string.Join(", ", tensor.Shape)}]", tensor.Length.ToString("N0", CultureInfo.InvariantCulture), quantization);
        }

        AnsiConsole.Write(table);
    }

    /// <summary>Adds a row of plain text (names and shapes hold brackets, which Spectre would read as markup).</summary>
    private static void AddRow(Table table, params string[] cells) => table.AddRow([.. cells.Select(c => new Text(c))]);

    private static long Bytes(TensorProto tensor) =>
        !tensor.RawData.IsEmpty ? tensor.RawData.Length
        : tensor.DataLocation == TensorProto.Types.DataLocation.External ? long.Parse(tensor.ExternalData.FirstOrDefault(e => e.Key == "length")?.Value ?? "0", CultureInfo.InvariantCulture)
        : (tensor.FloatData.Count * 4L) + (tensor.Int32Data.Count * 4L) + (tensor.Int64Data.Count * 8L) + (tensor.DoubleData.Count * 8L);
}
